"""BasicSR models for ESC. Importing this package registers them in ``MODEL_REGISTRY``."""

from .esc_model import ESCModel
from .esc_real_model import ESCRealESRGANModel, ESCRealESRNetModel

__all__ = ["ESCModel", "ESCRealESRGANModel", "ESCRealESRNetModel"]
