"""How errors and lists read on one line, in every layer: :func:`first_line`, :func:`listed`."""

from __future__ import annotations

__all__ = ["first_line", "listed"]


def first_line(error: BaseException) -> str:
    """An exception's message on one line: its first line, else its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def listed(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` names, and how many more: ``a.txt, b.psd, c.xyz and 2 more``."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
