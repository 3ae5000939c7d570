"""What every family's configuration shares: the attention backends' names, the default
FlashBias rank, and :class:`Keywords` (building a configuration from keywords, an unknown one
named with the closest known one). Each family's configuration class lives beside its
network (``archs/*_arch.py``); its presets and file handling in its family module
(:mod:`esc_arch.families`). This module imports no network code."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

#: The attention backends (see :mod:`esc_arch.archs.attention`); the authors' option files
#: spell some with capitals.
ATTN_TYPES = ("naive", "sdpa", "flex", "flash", "chunked", "auto")
_ATTN_ALIASES = {"Naive": "naive", "SDPA": "sdpa", "Flex": "flex", "Flash": "flash"}


def canonical_attn_type(attn_type: str) -> str:
    """``attn_type`` in this project's spelling, or ``ValueError``."""
    name = _ATTN_ALIASES.get(attn_type, attn_type)
    if name not in ATTN_TYPES:
        accepted = ", ".join(repr(n) for n in [*ATTN_TYPES, *_ATTN_ALIASES])
        raise ValueError(f"attn_type must be one of {accepted}; got {attn_type!r}")
    return name


__all__ = [
    "ATTN_TYPES",
    "FLASH_MAX_HEAD_DIM",
    "Keywords",
    "canonical_attn_type",
    "default_flashbias_rank",
    "positive_int",
]


#: flash-attn's largest head dim; the authors' default FlashBias rank is this minus the head dim.
FLASH_MAX_HEAD_DIM = 256


def default_flashbias_rank(head_dim: int) -> int:
    """The authors' default FlashBias rank (ESC's FlashBias layout, ESC-RIB's ``rank``, the
    ``flash`` backend's folded bias): the largest that fits flash-attn's head-dim limit beside
    ``head_dim`` channels."""
    return FLASH_MAX_HEAD_DIM - head_dim


def positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


class Keywords:
    """What every configuration class offers: its keywords, building from them with a
    ``TypeError`` naming an unknown one and the closest known one, ``as_dict`` and ``replace``."""

    @classmethod
    def keywords(cls) -> tuple[str, ...]:
        """The accepted keywords, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_keywords(cls, **keywords: Any):
        """Build from keywords; an unknown one is a ``TypeError`` naming it and the closest known one."""
        accepted = cls.keywords()
        for name in keywords:
            if name not in accepted:
                close = difflib.get_close_matches(name, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"{cls.family()}: unknown keyword {name!r}{hint}; accepted: {', '.join(accepted)}")
        return cls(**keywords)

    def as_dict(self) -> dict[str, Any]:
        """The keywords and their values (a new dict)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
