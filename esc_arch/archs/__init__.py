"""The ESC networks (plain torch; :mod:`esc_arch.basicsr_plugin` registers them in BasicSR)."""

from .esc_arch import ESC, ESCFP, NETWORKS, ESCReal

__all__ = ["ESC", "ESCFP", "NETWORKS", "ESCReal"]
