"""What a family module declares (:class:`Family`, :class:`Preset`, :class:`Weights`) and the
helpers its reader uses to get hyper-parameters from tensors (:func:`tensor`,
:func:`count_groups`, the key conditions :func:`has_all` / :func:`has_any`).

A family module (``esc_arch/families/<family>.py``) holds everything about one family beyond
its network's code: the configuration class and network it builds (imported from its
``archs/*_arch.py``), the keys that identify its state dicts, the function that reads its
hyper-parameters from them, its conversion hook, its capabilities, and its published
presets with their weight files. Nothing here depends on a particular family.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..limits import NETWORK_LIMITS

__all__ = [
    "Family",
    "Keys",
    "Preset",
    "Reader",
    "Weights",
    "configure",
    "count_groups",
    "has_all",
    "has_any",
    "tensor",
]


class Keys:
    """A condition on a state dict's key names, as spandrel's ``KeyCondition``: all of, or any
    of, keys and nested conditions (:func:`has_all`, :func:`has_any`)."""

    def __init__(self, kind: str, keys: tuple[str | Keys, ...]) -> None:
        self.kind, self.keys = kind, keys

    def __call__(self, state_dict: Mapping[str, object]) -> bool:
        held = (key(state_dict) if isinstance(key, Keys) else key in state_dict for key in self.keys)
        return all(held) if self.kind == "all" else any(held)

    def __repr__(self) -> str:
        return f"has_{self.kind}({', '.join(map(repr, self.keys))})"


def has_all(*keys: str | Keys) -> Keys:
    return Keys("all", keys)


def has_any(*keys: str | Keys) -> Keys:
    return Keys("any", keys)


#: A reader: ``(state_dict, attn_type, window_size)`` -> (the family's keywords, and for each
#: keyword checked against a limit, the key it was read from). A missing key is a ``KeyError``.
Reader = Callable[[dict[str, Tensor], str, int | None], tuple[dict[str, Any], dict[str, str]]]


def tensor(state_dict: Mapping[str, Tensor], key: str, ndim: int) -> Tensor:
    """``state_dict[key]``, which must have ``ndim`` dimensions (``KeyError`` when missing)."""
    if key not in state_dict:
        raise KeyError(key)
    value = state_dict[key]
    if value.ndim != ndim:
        raise ValueError(f"{key!r} has shape {tuple(value.shape)}; expected {ndim} dimensions")
    return value


def count_groups(state_dict: Mapping[str, object], prefix: str, what: str) -> tuple[int, str]:
    """How many ``{prefix}{i}.`` groups there are, numbered 0, 1, 2, ... (else ``ValueError``
    naming the key out of sequence), and the last one's first key."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found: dict[int, str] = {}
    for key in state_dict:
        if m := pattern.match(key):
            found.setdefault(int(m.group(1)), key)
    count = len(found)
    for index in sorted(found):
        if index >= count:
            gap = min(set(range(count)) - found.keys())
            raise ValueError(
                f"{found[index]!r}: {what} {index} but no {what} {gap} ({what}s are numbered 0, 1, 2, ...)"
            )
    return count, found.get(count - 1, prefix)


@dataclass(frozen=True)
class Weights:
    """A published weight file of a preset: the authors' file name, where it is published,
    under which licence, and its sha256 where this project has verified it (None: not
    verified here; the files are not downloaded by the project)."""

    file: str
    scale: int
    source: str
    licence: str | None = None
    sha256: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Preset:
    """A published network: its configuration (without the scale), exact parameter count per
    scale, and its published weight files."""

    config: Any
    params: dict[int, int] = field(hash=False)  #: scale -> exact parameter count
    weights: tuple[Weights, ...] = ()

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(self.params)


@dataclass(frozen=True)
class Family:
    """One network family: what builds it, what identifies and reads its state dicts, what its
    networks can do, and its presets. The families are listed in :data:`esc_arch.families.FAMILIES`.

    Capabilities (what :func:`esc_arch.families.describe` tells the CLI, the tiled inference,
    spandrel and ONNX export):

    - ``arbitrary_scale``: the network upscales by any factor (queried, not tiled); else its
      scale is its configuration's ``upscaling_factor``.
    - ``window_in_file``: the window is read from the file; else it is a choice
      (``window_size``, default ``default_window``).
    - ``precisions``: the autocast precisions verified for it (``fp16`` only where a GPU run
      verified it).
    - ``pads_itself``: any input size works (the network pads to its window itself).
    - ``tiling``: ``"discouraged"`` (a tile gives another output than the whole image: the
      dynamic kernels see the tile's statistics) or ``"none"`` (not tiled at all).
    """

    config: type  #: its configuration class; ``config.family()`` names the network
    network: type[nn.Module]  #: built as ``network(config)``
    marker: str  #: the key that tells this family from the families after it (none of them holds it)
    keys: Keys  #: the other keys its state dicts hold
    read: Reader
    what: str = "an ESC"  #: in "not an ESC state dict: 'KEY' is missing"
    limits: Mapping[str, int] = field(default_factory=dict)  #: limits of its own keywords besides NETWORK_LIMITS
    #: the pixel-shuffle head a scale transfer resizes: ``config -> (key prefix, channels per
    #: sub-pixel)``, or None when the network has none
    pixel_shuffle_head: Callable[[Any], tuple[str, int] | None] | None = None
    #: a conversion of another layout into this family's, applied in place to a state dict
    #: (``(state_dict, target state dict) -> None``; logged by the hook)
    convert: Callable[[dict[str, Tensor], dict[str, Tensor]], None] | None = None
    arbitrary_scale: bool = False
    pads_itself: bool = True  #: any input size works (the network pads to its window itself)
    window_in_file: bool = True
    default_window: int | None = None
    precisions: tuple[str, ...] = ("fp32", "bf16")
    tiling: str = "discouraged"
    presets: Mapping[str, Preset] = field(default_factory=dict)
    custom: str = "custom"  #: the variant name of a configuration that is none of the presets

    @property
    def name(self) -> str:
        """The network class name (option files' ``type``)."""
        return self.config.family()

    def __call__(self, state_dict: Mapping[str, object]) -> bool:
        """Whether ``state_dict`` holds every key of this family."""
        return self.marker in state_dict and self.keys(state_dict)

    def __repr__(self) -> str:
        return f"Family({self.name}: has_all({self.marker!r}, {self.keys!r}))"

    def replace(self, **changes: Any) -> Family:
        return dataclasses.replace(self, **changes)


def configure(family: Family, state_dict: dict[str, Tensor], attn_type: str, window_size: int | None):
    """``family``'s configuration read from ``state_dict`` by its reader, each value checked
    against :data:`esc_arch.limits.NETWORK_LIMITS` and the family's own limits before the
    configuration is built; ``ValueError`` naming the key otherwise."""
    try:
        keywords, sources = family.read(state_dict, attn_type, window_size)
    except KeyError as error:
        raise ValueError(f"not {family.what} state dict: {error.args[0]!r} is missing") from error
    for name, limit in {**NETWORK_LIMITS, **family.limits}.items():
        if (value := keywords.get(name)) is not None and value > limit:
            value = f"{value:g}" if isinstance(value, float) else value
            raise ValueError(f"{sources[name]!r}: {name} {value} is out of range (at most {limit})")
    try:
        return family.config(**keywords)
    except ValueError as error:
        raise ValueError(f"the configuration read from the tensors is not valid: {error}") from error
