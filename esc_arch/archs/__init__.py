"""The ESC networks (plain torch; :mod:`esc_arch.basicsr_plugin` registers them in BasicSR),
and building one from a configuration or a preset."""

from __future__ import annotations

from torch import nn

from ..config import ESCConfig, ESCLTEConfig, preset_config
from .esc_arch import ESC, ESCFP
from .esc_lte_arch import ESCLTE
from .esc_real_arch import ESCReal, ESCRealM
from .esc_rib_arch import ESCRIB

#: class name (as in option files, ``config.family()``) -> network class
NETWORKS = {"ESC": ESC, "ESCFP": ESCFP, "ESCReal": ESCReal, "ESCRealM": ESCRealM, "ESCLTE": ESCLTE, "ESCRIB": ESCRIB}

__all__ = ["ESC", "ESCFP", "ESCLTE", "ESCRIB", "NETWORKS", "ESCReal", "ESCRealM", "build_network", "build_preset"]


def build_network(config: ESCConfig | ESCLTEConfig) -> nn.Module:
    """A freshly initialised network of ``config``'s family (``NETWORKS[config.family()]``)."""
    return NETWORKS[config.family()](config)


def build_preset(name: str, scale: int, *, attn_type: str = "auto") -> nn.Module:
    """The published network ``name`` at ``scale`` (:data:`esc_arch.config.PRESETS`), freshly initialised."""
    return build_network(preset_config(name, scale).replace(attn_type=attn_type))
