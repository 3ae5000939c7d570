"""The BasicSR layer: everything of this project that knows BasicSR lives in this package.

- :mod:`.compat`: every adaptation and repair of BasicSR 1.4.2, listed and tested;
- :func:`activate`: applies them and registers the networks (every class of
  :data:`esc_arch.families.NETWORKS`: ``ESC``, ``ESCFP``, ``ESCReal``, ``ESCRealM``, ``ESCRIB``,
  ``ESCLTE``; and the discriminator ``DeepUNetDiscriminatorSN``) in ``ARCH_REGISTRY``, the models
  of :mod:`.models` (``ESCModel``, the ESC-Real models and the authors' names for them,
  ``ESCLTEModel``) in ``MODEL_REGISTRY``, its metric ``calculate_psnr_liif`` in
  ``METRIC_REGISTRY``, and :mod:`.data`'s ``DownsampleImageDataset`` and
  ``ArbitraryScaleDataset`` in ``DATASET_REGISTRY``;
- :mod:`.checks`: early, one-line errors for option files; :mod:`.pipeline`: the ``basicsr
  train`` / ``basicsr test`` commands on BasicSR's own pipelines.

This package is the one place that registers ESC with BasicSR. Importing it imports nothing
heavy and installs :func:`install_import_hook`, so that the first ``import basicsr``
afterwards is adapted and activated: a BasicSR script writes ``import esc_arch.basicsr_plugin``
then ``import basicsr``, and ``type: ESC`` works in its option files (with BasicSR imported
already, call :func:`activate`). The ``basicsr`` command (:mod:`.pipeline`) activates it
itself. ``import esc_arch`` alone leaves BasicSR untouched.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

__all__ = ["activate", "install_import_hook"]

#: Importing these registers BasicSR models and datasets (the models' first step is :func:`activate`).
_REGISTERING = ("esc_arch.basicsr_plugin.models", "esc_arch.basicsr_plugin.data")

_active = False


def activate() -> None:
    """Adapt BasicSR and register this project's networks and models (idempotent)."""
    global _active
    if _active:
        return
    _active = True
    from . import compat

    compat.apply_runtime()  # imports basicsr (adapted first)
    from basicsr.utils.registry import ARCH_REGISTRY

    from ..archs.discriminator_arch import DeepUNetDiscriminatorSN
    from ..families import NETWORKS, on_register

    def register(network: type) -> None:
        if network.__name__ not in ARCH_REGISTRY:
            ARCH_REGISTRY.register(network)

    for network in [*NETWORKS.values(), DeepUNetDiscriminatorSN]:
        register(network)
    on_register(lambda family: register(family.network))  # a family registered later
    for module in _REGISTERING:
        importlib.import_module(module)


class _ActivatingLoader(importlib.abc.Loader):
    """Loads ``basicsr`` with its own loader, adapting it before and activating after."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        from . import compat

        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BasicSRFinder)]
        compat.apply_import_time()
        self._loader.exec_module(module)
        activate()

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _BasicSRFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder for ``basicsr``; it leaves ``sys.meta_path`` when basicsr is loaded
    (a mere ``importlib.util.find_spec('basicsr')`` does not use it up)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "basicsr":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ActivatingLoader(spec.loader)
        return spec


def install_import_hook() -> None:
    """Adapt and activate BasicSR when it is first imported (no-op once it is imported)."""
    if "basicsr" in sys.modules:
        return
    if not any(isinstance(finder, _BasicSRFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BasicSRFinder())


install_import_hook()
