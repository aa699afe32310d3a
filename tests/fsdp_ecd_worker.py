"""Run by tests/test_fsdp.py under torchrun (2 gloo ranks): ECD on FSDP2-sharded float64
parameters against ECD on the same parameters unsharded, the same gradients each step. Prints
the largest parameter and momentum difference; the test asserts on it."""

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor

from symbreak.optim.ecd import ECD

projection, weight_decay = sys.argv[1], float(sys.argv[2])
dist.init_process_group("gloo")
torch.set_default_dtype(torch.float64)


class Stacked(torch.nn.Module):
    """A 3-D parameter like a mixture of experts' stacked weights (E, C, H), sharded along E."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(5, 4, 3))


def make() -> torch.nn.Module:
    torch.manual_seed(0)  # odd first dimensions: shards of unequal size (5 rows -> 3 + 2)
    layers = [torch.nn.Linear(16, 33), torch.nn.Linear(33, 5)]
    if len(sys.argv) > 3 and sys.argv[3] == "stacked":
        layers.append(Stacked())
    return torch.nn.Sequential(*layers)


ref, sharded = make(), make()
for layer in sharded:
    fully_shard(layer)
fully_shard(sharded)
kw = dict(lr=0.5, eta=10.0, F0=0.0, nu=0.7, weight_decay=weight_decay, projection=projection)
opts = ECD(ref.parameters(), seed=3, **kw), ECD(sharded.parameters(), seed=3, **kw)
gen = torch.Generator().manual_seed(1)
worst = 0.0
for step in range(4):
    grads = [torch.randn(p.shape, generator=gen) for p in ref.parameters()]
    for p, g in zip(ref.parameters(), grads, strict=True):
        p.grad = g.clone()
    for p, g in zip(sharded.parameters(), grads, strict=True):
        p.grad = distribute_tensor(g.clone(), p.device_mesh, p.placements, src_data_rank=None)
    loss = torch.tensor(5.0 - step)
    opts[0].step(loss=loss)
    opts[1].step(loss=loss)
    for a, b in zip(ref.parameters(), sharded.parameters(), strict=True):
        worst = max(worst, (a - b.full_tensor()).abs().max().item())
        ma, mb = opts[0].state[a]["momentum"], opts[1].state[b]["momentum"]
        worst = max(worst, (ma - mb.full_tensor()).abs().max().item())
if dist.get_rank() == 0:
    print(f"max difference {worst:.3e}", flush=True)
dist.destroy_process_group()
# Skip the interpreter's teardown: once in a few dozen runs a gloo thread still joinable at
# static destruction made it abort ("terminate called without an active exception", exit -6)
# after the comparison had finished.
sys.stderr.flush()
os._exit(0)
