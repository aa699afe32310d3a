"""Fully sharded data parallelism (``train.parallel=fsdp``) with PyTorch's FSDP2.

``fully_shard`` is applied to every transformer block and then to the whole model (which
holds the embeddings and the final LayerNorm): each parameter becomes a ``DTensor`` split along
its first dimension over the ranks, gathered just in time for a block's forward and backward and
freed after; gradients are reduce-scattered (averaged, like DDP's) so each rank keeps only its
shard, and the optimizer state built on the sharded parameters is sharded too. Per rank the
parameters, gradients and optimizer state are about 1 / world_size of the whole.

Checkpoints: gathered, not sharded. Before a save every rank joins in gathering full tensors
(``DTensor.full_tensor``); rank 0 writes the same ``model.safetensors`` / ``optimizer.safetensors``
a single process writes. Why: a run can then be evaluated, exported or resumed by one process or
by any other number of ranks, with the code paths and safe formats every other run uses. The
price is that rank 0 holds one full copy of the model and optimizer state in host memory while
it writes; for models whose state exceeds one host's memory, ``torch.distributed.checkpoint``
(one file per rank) would be the next step. On resume each rank reads the full tensors and keeps
its own shard (:func:`shard_optimizer_state`; the model's weights are loaded before sharding).

What it changes elsewhere: every rank evaluates the whole held-out set (an FSDP forward is a
collective, so ranks must run the same number of them); ECD reduces its global sums over the
shards (:mod:`symbreak.optim.ecd`); SOAP and Noether logging, which need whole matrices, are
refused by the config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def shard_model(model: nn.Module) -> None:
    """FSDP2 over the default process group: each block its own unit, the root the rest."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:  # type: ignore[attr-defined]
        fully_shard(block)
    fully_shard(model)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _full(x: Any, keep: bool) -> Any:
    """DTensors (at any depth of dicts and lists) gathered to full tensors; a collective. With
    ``keep=False`` each gathered tensor is dropped at once (None in its place): the ranks that
    do not write join the collectives without ever holding more than one full tensor."""
    from torch.distributed.tensor import DTensor

    if isinstance(x, DTensor):
        full = x.full_tensor()
        return full if keep else None
    if isinstance(x, dict):
        return {k: _full(v, keep) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_full(v, keep) for v in x)
    return x


def full_model_state(model: nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """The model's state dict with every shard gathered. Every rank must call it."""
    return _full(model.state_dict(), keep)


def full_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool = True) -> dict[str, Any]:
    """The optimizer's state dict with every sharded tensor gathered. Every rank must call it."""
    return _full(optimizer.state_dict(), keep)


def shard_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict[str, Any]) -> dict[str, Any]:
    """A full (single-process) optimizer state dict made to fit sharded parameters: each tensor
    of a parameter's state with the parameter's shape becomes that parameter's shard. Each rank
    slices its own part of the full tensor it read (no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = dict(sd)
    state = {}
    for key, entry in sd["state"].items():
        p = params[int(key)]
        new = dict(entry)
        if isinstance(p, DTensor):
            for name, v in entry.items():
                if isinstance(v, torch.Tensor) and tuple(v.shape) == tuple(p.shape):
                    new[name] = distribute_tensor(
                        v.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None
                    )
        state[key] = new
    out["state"] = state
    return out


def local_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of this rank's parameters and optimizer state (shards only, for FSDP)."""
    from torch.distributed.tensor import DTensor

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if isinstance(t, DTensor) else t

    total = sum(local(p).numel() * p.element_size() for p in model.parameters())
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                total += local(v).numel() * v.element_size()
    return total
