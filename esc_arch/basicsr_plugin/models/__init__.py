"""BasicSR models for ESC; importing this package activates the BasicSR layer and registers
them in ``MODEL_REGISTRY``."""

from .. import activate

activate()  # BasicSR adapted before the models below import it

from .esc_model import ESCModel, ESRModel  # noqa: E402
from .esc_real_model import ESCRealESRGANModel, ESCRealESRNetModel, RealHATGANModel, RealHATMSEModel  # noqa: E402
from .lte_model import ESCLTEModel  # noqa: E402

__all__ = [
    "ESCLTEModel",
    "ESCModel",
    "ESCRealESRGANModel",
    "ESCRealESRNetModel",
    "ESRModel",
    "RealHATGANModel",
    "RealHATMSEModel",
]
