"""Keep freed memory in the process for the next pass (glibc's malloc).

An ESC forward allocates and frees activations of tens to hundreds of MiB per layer. glibc's
malloc serves blocks over its mmap threshold (128 KiB, growing to at most 32 MiB) with fresh
``mmap`` calls and gives them back on ``free``, and returns the top of the heap to the system
past its trim threshold, so every pass faults its memory in again, a 4 KiB page at a time, with
the kernel zeroing each page. With :func:`keep_freed_memory` a second pass faults no pages in;
the price is a higher resident size (freed memory stays with the process). Figures:
docs/performance.md (benchmarks/inference_bounds.py measures both in fresh processes).

``esc upscale`` calls it once before its first image, and ``basicsr train`` / ``basicsr test``
first thing on a machine without CUDA. It is not applied on ``import esc_arch``:
a program that embeds the networks (a GUI, a server) decides for itself. The same settings can
be given to any process through the environment, before it starts:
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647``. Other C libraries
(macOS, Windows, musl) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger("esc_arch")

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap, not from mmap (larger ones are still mapped and
#: returned). glibc before 2.35 refuses thresholds over 32 MiB; that is tried next.
MMAP_THRESHOLDS = (1 << 30, 32 << 20)
#: Free memory at the top of the heap kept rather than returned to the system (effectively never).
TRIM_THRESHOLD = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds so freed activations are reused, not faulted in
    again. Returns True when both were set, False on another C library (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    threshold = next((t for t in MMAP_THRESHOLDS if mallopt(M_MMAP_THRESHOLD, t) == 1), None)
    applied = threshold is not None and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    logger.debug("malloc: mmap threshold %s, trim threshold %d: %s", threshold, TRIM_THRESHOLD,
                 "set" if applied else "refused")  # fmt: skip
    return applied
