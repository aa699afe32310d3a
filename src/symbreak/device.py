"""Which device and compute dtype a command runs with: one rule for every command."""

from __future__ import annotations

import contextlib
import functools
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
