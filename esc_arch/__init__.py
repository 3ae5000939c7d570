"""ESC: "Emulating Self-attention with Convolution for Efficient Image Super-Resolution"
(Lee, Yun, Ro; ICCV 2025; arXiv:2503.06671), in plain torch, with a BasicSR plugin.

The public API below needs only torch: the networks and their typed configurations, the
published presets, checkpoint loading and conversion, spandrel support. Names are imported
on first use, so ``import esc_arch`` is cheap.

Nothing here imports BasicSR or changes it: training and testing with BasicSR live in
:mod:`esc_arch.basicsr_plugin` (``pip install "esc_arch[train]"``), which adapts BasicSR
1.4.2 and registers ESC in its registries when it is imported.
"""

from __future__ import annotations

import importlib

from .version import __version__  # noqa: F401  (in __all__)

#: public name -> module that defines it (imported on first access)
_EXPORTS = {
    "ESC": ".archs",
    "ESCFP": ".archs",
    "ESCReal": ".archs",
    "ESCRealM": ".archs",
    "ESCLTE": ".archs",
    "ESCRIB": ".archs",
    "NETWORKS": ".archs",
    "ESCConfig": ".config",
    "ESCFPConfig": ".config",
    "ESCRealConfig": ".config",
    "ESCRealMConfig": ".config",
    "ESCLTEConfig": ".config",
    "ESCRIBConfig": ".config",
    "PRESETS": ".config",
    "build_preset": ".archs",
    "preset_config": ".config",
    "convert_state_dict": ".convert",
    "infer_config": ".loading",
    "keep_freed_memory": ".allocator",
    "load_model": ".loading",
    "read_state_dict": ".loading",
    "register_spandrel": ".spandrel_support",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'esc_arch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
