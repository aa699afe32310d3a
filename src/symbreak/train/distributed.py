"""Data parallelism on ``torch.distributed``: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node=N -m symbreak train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; without them the run is a single process and nothing here talks to anyone.
NCCL on CUDA, gloo on CPU. Gradients are averaged by ``DistributedDataParallel`` before the
optimizer step, so every rank applies the same update; global scalars (the loss that ECD uses,
the stop flag after a signal, the validation loss) are combined with :meth:`DistEnv.all_reduce`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from symbreak.device import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or max) of ``t`` over ranks, in place; the identity in a single process."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group that torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, option="train.device")
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(
                backend=backend, device_id=device if backend == "nccl" else None
            )
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)


def is_main_process() -> bool:
    """Rank 0, or not under torchrun (for printing before the process group exists)."""
    return os.environ.get("RANK", "0") == "0"
