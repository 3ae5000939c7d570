"""The ESC networks (plain torch; :mod:`esc_arch.basicsr_plugin` registers them in BasicSR)."""

from .esc_arch import ESC, ESCFP
from .esc_lte_arch import ESCLTE
from .esc_real_arch import ESCReal, ESCRealM
from .esc_rib_arch import ESCRIB

#: class name (as in option files) -> network class
NETWORKS = {"ESC": ESC, "ESCFP": ESCFP, "ESCReal": ESCReal, "ESCRealM": ESCRealM, "ESCLTE": ESCLTE, "ESCRIB": ESCRIB}

__all__ = ["ESC", "ESCFP", "ESCLTE", "ESCRIB", "NETWORKS", "ESCReal", "ESCRealM"]
