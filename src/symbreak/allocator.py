"""The process's memory allocator, tuned for training: glibc keeps freed blocks for reuse.

Kept free of torch imports: every ``symbreak`` command calls it first, ``--help`` included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30


@functools.cache
def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 1 GiB for reuse; True if applied.

    glibc serves every block above its mmap threshold (128 KiB, raised adaptively to at most
    32 MiB) with a fresh ``mmap`` and unmaps it on ``free``. A training step allocates and frees
    the same tens-of-MB temporaries again and again (the loss's (rows, V) chunks and gradient
    promotions, weight casts), and each one is then faulted in page by page anew: on the 2-core
    machine that took 30% of a tiny bf16 step (docs/performance.md, "The allocator"). Raising the
    mmap and trim thresholds lets malloc reuse those blocks; the peak RSS measured the same.
    This is why tcmalloc or jemalloc are recommended for PyTorch on CPU; glibc's own knobs do
    it without another library.

    Every ``symbreak`` command calls this at start. It is skipped where the user set glibc's
    own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (their choice wins; either is
    also the way to opt out), and off Linux/glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )
