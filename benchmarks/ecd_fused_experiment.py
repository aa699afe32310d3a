"""Experiment (not the product): could a compiled ECD step reach fused AdamW's?

    .venv/bin/python benchmarks/ecd_fused_experiment.py [--preset small]

ECD's nu=0 update (global projection, no weight decay) on a preset's parameter shapes, three
ways, interleaved, median of 10 after 2 warm-up rounds:

* ``foreach``: torch foreach ops, as ``optim/ecd.py`` does them (about 11 N-sized accesses);
* ``compiled``: the same maths as two ``torch.compile``d functions over the parameter lists,
  pass A ``<p, g>`` (2 N) and pass B ``p <- a p - kappa g; theta += dt p; |p|^2`` (5 N);
* ``adamw``: torch's fused AdamW on the same tensors (7 N in one pass).

Prints one JSON line (compile seconds, the three medians in ms). Findings in
docs/performance.md ("Optimizer step").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from symbreak.allocator import reuse_freed_memory
from symbreak.data import load_config
from symbreak.model import GPT


def pass_a(ms: list[torch.Tensor], gs: list[torch.Tensor]) -> torch.Tensor:
    return sum((m * g).sum(dtype=torch.float32) for m, g in zip(ms, gs, strict=True))


def pass_b(ths, ms, gs, a, kappa, dt) -> torch.Tensor:
    sq = []
    for th, m, g in zip(ths, ms, gs, strict=True):
        new = a * m - kappa * g
        m.copy_(new)
        th.add_(new * dt)
        sq.append((new * new).sum())
    return torch.stack(sq).sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    args = ap.parse_args()
    reuse_freed_memory()  # as every symbreak command does
    cfg = load_config(overrides=[f"model.preset={args.preset}"])
    params = [p.detach() for p in GPT(cfg.model, cfg.sb).parameters()]
    torch.manual_seed(0)
    grads = [torch.randn_like(p) for p in params]
    moms = [torch.randn_like(p) * 1e-4 for p in params]

    def foreach_step() -> None:
        d = torch.stack(
            [torch.dot(m.reshape(-1), g.reshape(-1)) for m, g in zip(moms, grads, strict=True)]
        ).sum()
        torch._foreach_mul_(moms, 1.0 + 1e-3 * d)
        torch._foreach_add_(moms, grads, alpha=-1e-3)
        torch.stack(torch._foreach_norm(moms)).square().sum()
        torch._foreach_add_(params, moms, alpha=1e-3)

    ca = torch.compile(pass_a, fullgraph=True)
    cb = torch.compile(pass_b, fullgraph=True)
    small = torch.tensor(1e-3)

    def compiled_step() -> None:
        cb(params, moms, grads, 1.0 + 1e-3 * ca(moms, grads), small, small)

    t0 = time.perf_counter()
    compiled_step()
    compile_s = time.perf_counter() - t0
    adam_params = [torch.nn.Parameter(p.clone()) for p in params]
    for p, g in zip(adam_params, grads, strict=True):
        p.grad = g.clone()
    adam = torch.optim.AdamW(adam_params, lr=1e-4, fused=True)
    paths = {"foreach": foreach_step, "compiled": compiled_step, "adamw": adam.step}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(12):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            if r >= 2:
                times[name].append(1e3 * (time.perf_counter() - t0))
    out = {f"{k}_ms": round(statistics.median(v), 2) for k, v in times.items()}
    out.update(
        compile_s=round(compile_s, 1),
        tensors=len(params),
        params=sum(p.numel() for p in params),
        threads=torch.get_num_threads(),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
