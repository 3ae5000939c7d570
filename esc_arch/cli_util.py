"""What the command lines share: one clear error line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["first_line", "guarded"]


def guarded(func: Callable) -> Callable:
    """Run a subcommand; a ``ValueError`` or missing file ends it with ``esc: error: ...`` and
    exit status 2."""

    def run(args) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError) as error:
            print(f"esc: error: {error}", file=sys.stderr)
            return 2

    return run


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
