"""Atomic file writing, the one implementation every writer of this project uses.

A file is written to a temporary name in its own folder and renamed into place when
complete, so a crash or ``kill -9`` never leaves a half-written file under the final name.
The result gets the permissions a plain ``open()`` would give (``0666`` less the umask),
not the ``0600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from os import path as osp

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block
    ends without an exception, removed otherwise. ``suffix`` keeps an extension that a
    writer needs (e.g. ``.png`` for OpenCV)."""
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{osp.basename(path)}.", suffix=suffix)
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (flushed to disk before the rename)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
