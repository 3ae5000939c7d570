"""What the command lines share: one clear error line instead of a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from os import path as osp

__all__ = ["check_output_file", "first_line", "guarded"]


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


def check_output_file(path: str, option: str = "-o") -> None:
    """``ValueError`` (one line) unless ``path`` can be written as a file: not a folder, in a
    folder that exists, is writable and is not on a read-only file system. Checked before
    the work that produces it."""
    if osp.isdir(path):
        raise ValueError(f"{option} {path}: is a folder; give the file to write, e.g. {osp.join(path, 'model.onnx')}")
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise ValueError(f"{option} {path}: {folder} is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable")
