"""Fused chunked output layer + cross-entropy vs the plain path, forward + backward.

    .venv/bin/python benchmarks/bench_loss.py [--rows 1024] [--dim 128] [--vocab 50304]
        [--dtype fp32|bf16] [--chunk-rows N]

Prints one JSON line: median milliseconds of each path (interleaved, same run) and their ratios:
the plain ``F.cross_entropy(F.linear(...))``, the fused path with the eager chunk kernel and with
the compiled one (its compile time is reported apart, ``compile_s``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F

from symbreak.allocator import reuse_freed_memory
from symbreak.model.loss import default_chunk_rows, linear_cross_entropy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024, help="tokens per step (B*T)")
    ap.add_argument("--dim", type=int, default=128, help="model width")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="autocast dtype")
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    reuse_freed_memory()  # as every symbreak command does
    torch.manual_seed(0)
    h = torch.randn(args.rows, args.dim, requires_grad=True)
    w = (0.02 * torch.randn(args.vocab, args.dim)).requires_grad_()
    y = torch.randint(0, args.vocab, (args.rows,))
    amp = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if args.dtype == "bf16"
        else contextlib.nullcontext()
    )
    cr = args.chunk_rows

    def fused(kernel: str):
        return lambda: linear_cross_entropy(h, w, y, chunk_rows=cr, kernel=kernel).backward()

    paths = {
        "plain_ms": lambda: F.cross_entropy(F.linear(h, w), y).backward(),
        "eager_ms": fused("eager"),
        "compiled_ms": fused("compiled"),
    }
    t0 = time.perf_counter()
    with amp:
        paths["compiled_ms"]()
    compile_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(args.repeats + 2):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            with amp:
                fn()
            if i >= 2:  # the first two rounds warm up
                times[name].append(1e3 * (time.perf_counter() - t0))
    out: dict[str, object] = {k: round(statistics.median(v), 2) for k, v in times.items()}
    out["eager_over_plain"] = round(out["eager_ms"] / out["plain_ms"], 3)
    out["compiled_over_eager"] = round(out["compiled_ms"] / out["eager_ms"], 3)
    out.update(
        compile_s=round(compile_s, 1),
        rows=args.rows,
        dim=args.dim,
        vocab=args.vocab,
        dtype=args.dtype,
        chunk_rows=cr if cr is not None else default_chunk_rows(args.vocab),
        threads=torch.get_num_threads(),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
