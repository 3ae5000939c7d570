"""The ESC networks (plain torch; :mod:`esc_arch.basicsr_plugin` registers them in BasicSR)."""

from .esc_arch import ESC, ESCFP
from .esc_real_arch import ESCReal, ESCRealM

#: class name (as in option files) -> network class
NETWORKS = {"ESC": ESC, "ESCFP": ESCFP, "ESCReal": ESCReal, "ESCRealM": ESCRealM}

__all__ = ["ESC", "ESCFP", "NETWORKS", "ESCReal", "ESCRealM"]
