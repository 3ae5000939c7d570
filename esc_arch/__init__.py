"""ESC for BasicSR: "Emulating Self-attention with Convolution for Efficient Image
Super-Resolution" (Lee, Yun, Ro; ICCV 2025; arXiv:2503.06671) as a BasicSR plugin.

Importing this package adapts BasicSR 1.4.2 to today's torch/torchvision/numpy
(:mod:`esc_arch.compat`, applied before BasicSR is first imported) and registers the
networks ``ESC``, ``ESCFP`` and ``ESCReal`` in BasicSR's ``ARCH_REGISTRY`` and ``ESCModel``
in its ``MODEL_REGISTRY``.
"""

from . import compat

compat.apply()

from .archs import ESC, ESCFP, ESCReal  # noqa: E402  (BasicSR must be adapted first)
from .loading import load_model  # noqa: E402
from .models import ESCModel  # noqa: E402
from .presets import PRESETS, build_preset, preset_config  # noqa: E402
from .spandrel_support import register_spandrel  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "ESC",
    "ESCFP",
    "ESCModel",
    "ESCReal",
    "PRESETS",
    "__version__",
    "build_preset",
    "load_model",
    "preset_config",
    "register_spandrel",
]
