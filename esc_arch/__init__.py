"""ESC: "Emulating Self-attention with Convolution for Efficient Image Super-Resolution"
(Lee, Yun, Ro; ICCV 2025; arXiv:2503.06671), in plain torch, with a BasicSR plugin.

The public API below needs only torch: the networks and their typed configurations, the
families with their published presets (and :func:`register_family` to add one), the
description every door reads (:func:`describe`), checkpoint loading and conversion, spandrel
support. Names are imported
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
    "ESCConfig": ".archs",
    "ESCFPConfig": ".archs",
    "ESCRealConfig": ".archs",
    "ESCRealMConfig": ".archs",
    "ESCLTEConfig": ".archs",
    "ESCRIBConfig": ".archs",
    "FAMILIES": ".families",
    "NETWORKS": ".families",
    "PRESETS": ".families",
    "Family": ".families",
    "build_network": ".families",
    "build_preset": ".families",
    "describe": ".families",
    "preset_config": ".families",
    "register_family": ".families",
    "convert_state_dict": ".weights",
    "infer_config": ".weights",
    "load_model": ".weights",
    "read_state_dict": ".weights",
    "keep_freed_memory": ".runtime.allocator",
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
