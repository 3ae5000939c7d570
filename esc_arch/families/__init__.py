"""The network families: one module each, listed in :data:`FAMILIES`.

A family module (see :mod:`esc_arch.families.family` for what it declares) holds its
configuration class and network (imported from its ``archs/*_arch.py``), the reader of its
hyper-parameters from tensors, its detection keys, its conversion hook, its capabilities and
its presets with their published weight files. Adding a family is one new module and one
line in :data:`FAMILIES` (or, from outside the package, :func:`register_family`); every door
(:func:`esc_arch.load_model`, ``esc upscale``, ``esc export``, ``esc onnx``, spandrel,
BasicSR's registry) reads the families from here.

:func:`describe` is the one description of a network that the doors read: its scale (or
arbitrary scale), the size multiple of the paper's protocol, the precisions verified, the
tiling advice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import esc, esc_fp, esc_lte, esc_real, esc_realm, esc_rib
from .family import Family, Preset, Weights

__all__ = [
    "FAMILIES",
    "NETWORKS",
    "PRESETS",
    "Family",
    "Preset",
    "Upscaler",
    "Weights",
    "build_network",
    "build_preset",
    "describe",
    "detect_family",
    "detect_variant",
    "family_of",
    "on_register",
    "preset_config",
    "register_family",
]

#: The families, in the order they are tried: the first whose keys a state dict holds is its
#: family. The order matters where a family holds another's keys: ESC-RIB, ESCRealM and ESC-Real
#: hold ESC's ``plk_filter``, ESCRealM ESC-Real's ``skip.0.weight``; each family's marker is held
#: by none of the families after it. A state dict that holds a family's marker but not all its
#: keys is read as that family, so the error names the tensor that is missing.
FAMILIES: list[Family] = [
    esc_rib.FAMILY,
    esc_lte.FAMILY,
    esc_fp.FAMILY,
    esc_realm.FAMILY,
    esc_real.FAMILY,
    esc.FAMILY,
]

_listeners: list[Callable[[Family], None]] = []


def register_family(family: Family) -> None:
    """Add a family from outside the package (tried before the package's own, so its marker
    must be held by none of them); every door takes it from then on. Registering the same
    network class again replaces its family."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family takes a Family; got {type(family).__name__}")
    FAMILIES[:] = [family, *(f for f in FAMILIES if f.network is not family.network)]
    for listener in _listeners:
        listener(family)


def on_register(listener: Callable[[Family], None]) -> None:
    """Call ``listener(family)`` for each family registered from now on (the BasicSR plugin
    registers their networks in BasicSR's registry this way)."""
    _listeners.append(listener)


def detect_family(state_dict: Mapping[str, object], *, complete: bool = True) -> Family | None:
    """The family ``state_dict`` belongs to: the first whose keys it holds; with
    ``complete=False``, else the first whose marker it holds; else None."""
    found = next((family for family in FAMILIES if family(state_dict)), None)
    if found is None and not complete:
        found = next((family for family in FAMILIES if family.marker in state_dict), None)
    return found


def family_of(network_or_config: nn.Module | Any) -> Family | None:
    """The family of a network (or of a configuration), or None when it is none of
    :data:`FAMILIES` (the discriminator)."""
    network_or_config = getattr(network_or_config, "module", network_or_config)  # (Distributed)DataParallel
    kind = type(network_or_config)
    return next((f for f in FAMILIES if kind is f.network or kind is f.config), None)


def build_network(config) -> nn.Module:
    """A freshly initialised network of ``config``'s family."""
    family = family_of(config)
    if family is None:
        raise ValueError(f"{type(config).__name__} is the configuration of none of the families")
    return family.network(config)


class _Presets(Mapping):
    """Every family's presets by name (a live view of :data:`FAMILIES`)."""

    def _all(self) -> dict[str, Preset]:
        return {name: preset for family in reversed(FAMILIES) for name, preset in family.presets.items()}

    def __getitem__(self, name: str) -> Preset:
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


class _Networks(Mapping):
    """Every family's network class by name (option files' ``type``; a live view of :data:`FAMILIES`)."""

    def _all(self) -> dict[str, type[nn.Module]]:
        return {family.name: family.network for family in reversed(FAMILIES)}

    def __getitem__(self, name: str) -> type[nn.Module]:
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


#: The network classes by name (``ESC``, ``ESCFP``, ``ESCReal``, ``ESCRealM``, ``ESCLTE``, ``ESCRIB``).
NETWORKS: Mapping[str, type[nn.Module]] = _Networks()

#: The published networks by name (``ESC``, ``ESC-light``, ``ESC-FP``, ``ESC-XL``, ``ESC-Real``,
#: ``ESC-Real-XL``, ``ESC-RIB``, ``ESC-LTE``), each with its exact parameter counts and weight files.
PRESETS: Mapping[str, Preset] = _Presets()


def preset_config(name: str, scale: int):
    """The configuration of preset ``name`` at ``scale``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if scale not in preset.scales:
        raise ValueError(f"preset {name!r} has no x{scale} model; accepted scales: {list(preset.scales)}")
    return preset.config.replace(upscaling_factor=scale)


def build_preset(name: str, scale: int, *, attn_type: str = "auto") -> nn.Module:
    """The published network ``name`` at ``scale`` (:data:`PRESETS`), freshly initialised."""
    return build_network(preset_config(name, scale).replace(attn_type=attn_type))


def detect_variant(config) -> str:
    """The published variant (``ESC``, ``ESC-light``, ``ESC-FP``, ``ESC-XL``, ``ESC-Real``,
    ``ESC-Real-XL``, ``ESC-RIB``, ``ESC-LTE``) that ``config`` is, whatever its attention backend,
    or ``"custom"`` (``"custom-LTE"`` for an arbitrary-scale one); a FlashBias layout of rank r
    adds ``-FB{r}`` (``ESC-FB48``)."""
    family = family_of(config)
    plain = config.plain()
    rank = getattr(config, "flashbias_rank", None)
    suffix = f"-FB{rank}" if rank is not None else ""
    for name, preset in (family.presets if family else {}).items():
        if family.arbitrary_scale:
            if plain == preset.config.plain():
                return name + suffix
        elif (
            config.upscaling_factor in preset.scales
            and plain == preset.config.replace(upscaling_factor=config.upscaling_factor).plain()
        ):
            return name + suffix
    return (family.custom if family is not None else "custom") + suffix


@dataclass(frozen=True)
class Upscaler:
    """What a loaded network is and needs, read by every door (the CLI, the tiled inference,
    spandrel's descriptor, ONNX export) from :func:`describe`.

    - ``scale``: the fixed output factor; ``None`` exactly when ``arbitrary_scale``.
    - ``size_multiple``: the paper's protocol pads inputs to a multiple of this (the window, in
      input pixels); ``pads_itself``: the network pads any other size itself (ESC's windows),
      so any input size gives ``scale`` times its size.
    - ``precisions``: the autocast precisions verified for it; ``tiling``: ``"discouraged"``
      (a tile's output differs from the whole image's) or ``"none"`` (queried, not tiled).
    """

    family: str
    variant: str
    arbitrary_scale: bool
    scale: int | None
    size_multiple: int
    pads_itself: bool
    window_in_file: bool
    precisions: tuple[str, ...]
    tiling: str


def describe(net: nn.Module) -> Upscaler:
    """The :class:`Upscaler` description of ``net`` (a network of one of :data:`FAMILIES`)."""
    net = getattr(net, "module", net)  # (Distributed)DataParallel
    family = family_of(net)
    if family is None:
        raise ValueError(f"{type(net).__name__} is a network of none of the families")
    config = net.config
    return Upscaler(
        family=family.name,
        variant=detect_variant(config),
        arbitrary_scale=family.arbitrary_scale,
        scale=None if family.arbitrary_scale else config.upscaling_factor,
        size_multiple=net.size_multiple,
        pads_itself=family.pads_itself,
        window_in_file=family.window_in_file,
        precisions=family.precisions,
        tiling=family.tiling,
    )
