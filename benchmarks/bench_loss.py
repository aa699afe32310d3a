"""Fused chunked output layer + cross-entropy vs the plain path, forward + backward.

    .venv/bin/python benchmarks/bench_loss.py [--rows 1024] [--dim 128] [--vocab 50304]

Prints one JSON line: median milliseconds of each path (interleaved, same run) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from symbreak.model.loss import linear_cross_entropy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024, help="tokens per step (B*T)")
    ap.add_argument("--dim", type=int, default=128, help="model width")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    h = torch.randn(args.rows, args.dim, requires_grad=True)
    w = (0.02 * torch.randn(args.vocab, args.dim)).requires_grad_()
    y = torch.randint(0, args.vocab, (args.rows,))
    paths = {
        "plain_ms": lambda: F.cross_entropy(F.linear(h, w), y).backward(),
        "fused_ms": lambda: linear_cross_entropy(h, w, y).backward(),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(args.repeats + 2):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            if i >= 2:  # the first two rounds warm up
                times[name].append(1e3 * (time.perf_counter() - t0))
    out = {k: round(statistics.median(v), 2) for k, v in times.items()}
    out["fused_over_plain"] = round(out["fused_ms"] / out["plain_ms"], 3)
    out.update(rows=args.rows, dim=args.dim, vocab=args.vocab, threads=torch.get_num_threads())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
