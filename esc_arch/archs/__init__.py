"""ESC networks. Importing this package registers ESC, ESCFP and ESCReal in BasicSR's
``ARCH_REGISTRY`` (import :mod:`esc_arch` itself so BasicSR is adapted first)."""

from .esc_arch import ESC, ESCFP, ESCReal

__all__ = ["ESC", "ESCFP", "ESCReal"]
