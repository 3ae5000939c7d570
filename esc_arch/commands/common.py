"""What the command lines share: one clear line instead of a traceback, and the package's
warnings on the console."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from os import path as osp

from ..text import first_line, listed

__all__ = ["INTERRUPTED", "check_not_an_input", "check_output_file", "check_output_folder", "first_line", "guarded",
           "listed", "notes_on_stderr"]  # fmt: skip

#: The exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def guarded(func: Callable) -> Callable:
    """Run a subcommand; a ``ValueError`` or missing file ends it with ``esc: error: ...`` and
    exit status 2, Ctrl-C with ``esc: interrupted`` and exit status :data:`INTERRUPTED`."""

    def run(args) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError) as error:
            print(f"esc: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("esc: interrupted", file=sys.stderr)
            return INTERRUPTED

    return run


class _Notes(logging.Handler):
    """``esc: note: MESSAGE`` on the current ``sys.stderr``, one line per record, unless another
    handler that the record reaches prints it on the console already (BasicSR's own logger,
    ``basicsr``, while a training run in this process has set it up)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def _printed_elsewhere(self, record: logging.LogRecord) -> bool:
        consoles = {sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__}
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            for handler in logger.handlers:
                stream = getattr(handler, "stream", None)
                if handler is not self and stream in consoles and record.levelno >= handler.level:
                    return True
            logger = logger.parent if logger.propagate else None
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self._printed_elsewhere(record):
                print("esc: note: " + " ".join(record.getMessage().splitlines()), file=sys.stderr)
        except Exception:  # a record that cannot be formatted never stops the command
            self.handleError(record)


@contextlib.contextmanager
def notes_on_stderr(name: str = "basicsr.esc") -> Iterator[None]:
    """For the block: the WARNING and higher records of logger ``name`` (the assumptions
    loading makes, e.g. ESC-RIB's window) as ``esc: note: ...`` lines on stderr, once each."""
    logger = logging.getLogger(name)
    handler = _Notes()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


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


def check_not_an_input(output: str | os.PathLike, source: str | os.PathLike, what: str, hint: str,
                       option: str = "") -> None:  # fmt: skip
    """``ValueError`` (one line, ``output`` after ``option``) when ``output`` is the file
    ``source`` (by any path, links included), which is never written onto, even with
    ``--overwrite``."""
    output, source = os.fspath(output), os.fspath(source)
    same = osp.realpath(output) == osp.realpath(source)
    if not same and osp.exists(output) and osp.exists(source):
        same = osp.samefile(output, source)
    if same:
        label = f"{option} {output}" if option else output
        raise ValueError(f"{label}: is {what}, which is never replaced (not even with --overwrite); {hint}")


def check_output_folder(folder: str, option: str = "-o") -> None:
    """``ValueError`` unless ``folder`` is a folder or can be created (nothing is created)."""
    if osp.exists(folder):
        if not osp.isdir(folder):
            raise ValueError(f"{option} {folder}: exists and is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {folder}: the folder is not writable")
        return
    parent = osp.dirname(osp.abspath(folder))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise ValueError(f"{option} {folder}: cannot create the output folder ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {folder}: cannot create the output folder ({parent} is not writable)")
