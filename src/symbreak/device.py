"""Which device a command runs on: one rule for ``train``, ``eval``, ``sample`` and ``bench``."""

from __future__ import annotations

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
