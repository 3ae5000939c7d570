"""The ESC networks and their configurations (plain torch; :mod:`esc_arch.families` lists the
families, :mod:`esc_arch.basicsr_plugin` registers them in BasicSR)."""

from __future__ import annotations

from .esc_arch import ESC, ESCFP, ESCConfig, ESCFPConfig
from .esc_lte_arch import ESCLTE, ESCLTEConfig
from .esc_real_arch import ESCReal, ESCRealConfig, ESCRealM, ESCRealMConfig
from .esc_rib_arch import ESCRIB, ESCRIBConfig

__all__ = [
    "ESC",
    "ESCFP",
    "ESCLTE",
    "ESCRIB",
    "ESCConfig",
    "ESCFPConfig",
    "ESCLTEConfig",
    "ESCRIBConfig",
    "ESCReal",
    "ESCRealConfig",
    "ESCRealM",
    "ESCRealMConfig",
]
