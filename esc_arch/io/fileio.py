"""Atomic file writing, the one implementation every writer of this project uses.

A file is written where no one sees it and given its final name only when complete, so a
crash or ``kill -9`` never leaves a half-written file under the final name:

- on Linux, as an unnamed file in its own folder (``O_TMPFILE``), which vanishes with the
  process that writes it; the writer gets ``/proc/self/fd/N`` as its path;
- elsewhere (a file system without unnamed files, no ``/proc``), under a hidden temporary
  name beside it, ``.NAME.HOST-PID-XXXXXXXX.SUFFIX``: the writer's host and process id, so
  that the first write of a later process into that folder removes the temporaries whose
  process is gone (:func:`remove_stale_temporaries`).

The final name is given without replacing anything (``os.link``, which refuses an existing
name), unless ``replace`` is asked for (``os.replace``): a file that appears under that name
while the output is written (another run writing into the same folder) is kept, and
:class:`OutputExists` says so. The result gets the permissions a plain ``open()`` would give
(``0666`` less the umask), not the ``0600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Iterator
from os import path as osp

__all__ = ["DiskFullError", "OutputExists", "atomic_path", "atomic_torch_save", "atomic_write_text", "is_temporary",
           "remove_stale_temporaries"]  # fmt: skip


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class DiskFullError(OSError, ValueError):
    """A write failed because its file system is full; one line naming the file and the free
    space (a ``ValueError`` too, so that every command reports it as one line)."""


class OutputExists(FileExistsError, ValueError):
    """The output's name was taken while it was written (by another process): that file is
    kept, this output is discarded (one line; a ``ValueError`` too, as :class:`DiskFullError`)."""


#: Free space below which a failed write is put down to a full disk: writers such as
#: ``torch.save`` report it as a generic failure, not as ``ENOSPC``.
_NEARLY_FULL = 1 << 20

#: This machine in temporary names (6 hex digits of a hash of the host name).
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]

#: A temporary name: ``.NAME.HOST-PID-XXXXXXXX`` and the writer's suffix.
_TEMPORARY = re.compile(r"\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[0-9a-f]{8}(\.[A-Za-z0-9_]+)?")

#: Folders whose stale temporaries this process has removed (once per folder and process).
_swept: set[str] = set()

#: ``os.link`` errors of a file system without hard links.
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV)


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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (a process of another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def is_temporary(name: str) -> bool:
    """Whether the file name ``name`` is a temporary of :func:`atomic_path` (a file being
    written, or left by a killed writer)."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the temporaries in ``folder`` that a writer on this machine left when it was
    killed (its process is gone); returns their names. Others' temporaries are left alone."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if not match or match["host"] != _HOST or _alive(int(match["pid"])):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    os.remove(entry.path)
                    removed.append(entry.name)
    return removed


def _temporary_name(path: str, suffix: str) -> str:
    """A hidden name beside ``path`` that carries this host and process (the file name cut to
    100 characters, so that the temporary's name stays within the file system's limit)."""
    folder, name = osp.split(path)
    return osp.join(folder, f".{name[:100]}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _unnamed(folder: str) -> int | None:
    """A descriptor of a new unnamed file in ``folder`` that can be reopened and linked
    through ``/proc/self/fd``; ``None`` where that is not available here."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not osp.isdir("/proc/self/fd"):
        return None
    try:
        fd = os.open(folder, flag | os.O_RDWR, 0o600)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        return None  # no unnamed files on this file system (EOPNOTSUPP, EISDIR, EINVAL, ...)
    try:  # the writer reopens it by this path: a process that changed its user may not
        os.close(os.open(f"/proc/self/fd/{fd}", os.O_WRONLY))
    except OSError:
        os.close(fd)
        return None
    return fd


def _taken(path: str) -> OutputExists:
    return OutputExists(
        f"{path} was created by another writer while this output was written; it was kept and this output discarded"
    )


def _link(source: str, path: str) -> None:
    """Give ``source``'s file the name ``path`` unless that name exists (:class:`OutputExists`).
    ``source`` may be a ``/proc/self/fd/N`` link, which is followed (``linkat`` with
    ``AT_SYMLINK_FOLLOW``: ``os.link`` calls it only with a folder descriptor)."""
    folder = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(source, osp.basename(path), dst_dir_fd=folder, follow_symlinks=True)
    except FileExistsError as error:
        raise _taken(path) from error
    finally:
        os.close(folder)


def _link_or_create(source: str, path: str) -> None:
    """:func:`_link` a named file, on a file system without hard links by creating ``path``
    exclusively and renaming ``source`` onto it."""
    try:
        _link(source, path)
    except OSError as error:
        if isinstance(error, OutputExists) or error.errno not in _NO_LINKS:
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError as exists:
            raise _taken(path) from exists
        os.replace(source, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp", replace: bool = True) -> Iterator[str]:
    """A path to write ``path``'s content to, unseen; given the name ``path`` when the block
    ends without an exception, removed otherwise. ``replace``: an existing ``path`` is replaced;
    otherwise a ``path`` that exists when the block ends is kept and :class:`OutputExists`
    raised. ``suffix`` ends a named temporary (where unnamed files are not available). A write
    that fails on a full disk raises :class:`DiskFullError` (the file, the free space); nothing
    is left under either name."""
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    if folder not in _swept:
        _swept.add(folder)
        remove_stale_temporaries(folder)
    tmp, fd = None, None
    try:
        fd = _unnamed(folder)
        tmp = f"/proc/self/fd/{fd}" if fd is not None else _temporary_name(path, suffix)
        if fd is None:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        if _disk_full(error, folder):
            raise DiskFullError(f"cannot write {path}: the disk is full ({_free_text(folder)})") from error
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if fd is None:
            (os.replace if replace else _link_or_create)(tmp, path)
        elif replace:  # an unnamed file is named once, never renamed: a named temporary in between
            named = _temporary_name(path, suffix)
            _link(tmp, named)
            try:
                os.replace(named, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(named)
        else:
            _link(tmp, path)
    except Exception as error:
        # measured while the partial file still holds its space
        full = not isinstance(error, OutputExists) and _disk_full(error, folder)
        if fd is not None:
            os.close(fd)
            fd, tmp = None, None  # nothing is left of an unnamed file; its /proc path names nothing now
        elif tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        if full:
            raise DiskFullError(
                f"cannot write {path}: the disk is full ({_free_text(folder)} without the partial file, which was "
                "removed)"
            ) from error
        raise
    finally:
        if fd is not None:
            os.close(fd)
        elif tmp is not None:
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
