"""Atomic file writing, the one implementation every writer of this project uses.

A file is written to a temporary name in its own folder and renamed into place when
complete, so a crash or ``kill -9`` never leaves a half-written file under the final name.
The result gets the permissions a plain ``open()`` would give (``0666`` less the umask),
not the ``0600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from os import path as osp

__all__ = ["DiskFullError", "atomic_path", "atomic_torch_save", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class DiskFullError(OSError, ValueError):
    """A write failed because its file system is full; one line naming the file and the free
    space (a ``ValueError`` too, so that every command reports it as one line)."""


#: Free space below which a failed write is put down to a full disk: writers such as
#: ``torch.save`` report it as a generic failure, not as ``ENOSPC``.
_NEARLY_FULL = 1 << 20


def _free_bytes(folder: str) -> int:
    stat = os.statvfs(folder)
    return stat.f_bfree * stat.f_frsize


def _free_text(folder: str) -> str:
    free = _free_bytes(folder)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if free >= size:
            return f"{free / size:.1f} {unit} free in {folder}"
    return f"{free / 2**10:.0f} KiB free in {folder}"


def _disk_full(error: BaseException, folder: str) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return _free_bytes(folder) < _NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block
    ends without an exception, removed otherwise. ``suffix`` keeps an extension that a
    writer needs (e.g. ``.png`` for OpenCV). A write that fails on a full disk raises
    :class:`DiskFullError` (the file, the free space); nothing is left under either name."""
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    try:
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{osp.basename(path)}.", suffix=suffix)
    except OSError as error:
        if _disk_full(error, folder):
            raise DiskFullError(f"cannot write {path}: the disk is full ({_free_text(folder)})") from error
        raise
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as error:
        full = _disk_full(error, folder)  # measured while the partial file still holds its space
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if full:
            raise DiskFullError(
                f"cannot write {path}: the disk is full ({_free_text(folder)} without the partial file, which was "
                "removed)"
            ) from error
        raise
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
