"""Which device and compute dtype a command runs with: one rule for every command."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
from pathlib import Path

import torch

from symbreak.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0, option: str = "--device") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    A bare ``cuda`` means device ``local_rank`` (the process's GPU under torchrun). ``option``
    names the setting in error messages (``train.device`` or ``--device``).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option} {name!r} is not auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name} but CUDA is not available; use cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16; Linux only).

    Without them oneDNN emulates bf16 through fp32 and autocast would only add casts, so fp32
    stays the default there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Autocast compute dtype: ``fp32``, ``bf16``, or ``auto``.

    ``auto`` is bf16 on CUDA and on CPUs with native bf16 instructions, fp32 elsewhere. On CPU a
    test shows bf16 tracks fp32's loss curve (tests/test_train.py); docs/performance.md has the
    speed-up.
    """
    if name == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
