"""The CPU speed targets (docs/performance.md), measured with the defaults a user gets, repeated.

    .venv/bin/python benchmarks/speed_targets.py [--repeats 3] [--steps 10] [--out FILE.json]

Runs ``symbreak bench train --json`` (a fresh process each time, nothing but defaults and the
configuration's own keys) for:

* ``paper_code``: the paper-code configuration (tiny preset: L4 H4 C128, context 128, batch 8,
  GPT-2 vocabulary, AdamW, bQ+bV) -> ``x_paper_code`` (target >= 3);
* ``small_bf16`` / ``small_fp32``: the small preset -> MFU against the same-dtype peak measured
  in the run (target: bf16 >= 0.5);
* ``char_fp32`` / ``char_bf16``: the CPU study's character-level configuration -> fp32 MFU
  (target >= 0.5) and bf16 tok/s over fp32 tok/s (target >= 1.5; the two come from different
  processes, run back to back, so the ratio is taken per repeat).

Prints one JSON object: per case the median and range over the repeats, then the targets. Run
it on a quiet machine: a neighbour's load changes every figure (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHAR = [
    "data.source=shakespeare_char",
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "model.block_size=128",
    "train.batch_size=16",
]
CASES: dict[str, list[str]] = {
    "paper_code": [],
    "small_bf16": ["--dtype", "bf16", "model.preset=small"],
    "small_fp32": ["--dtype", "fp32", "model.preset=small"],
    "char_fp32": ["--dtype", "fp32", *CHAR],
    "char_bf16": ["--dtype", "bf16", *CHAR],
}
KEYS = ("tok_per_s", "mfu", "x_paper_code", "loss_kernel", "matmul_peak_flops_per_s")


def bench(args: list[str], steps: int) -> dict:
    symbreak = Path(sys.executable).with_name("symbreak")
    cmd = [str(symbreak), "bench", "train", "--json", "--steps", str(steps), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in CASES}
    t0 = time.perf_counter()
    for r in range(args.repeats):
        for name, extra in CASES.items():
            res = bench(extra, args.steps)
            runs[name].append({k: res[k] for k in KEYS})
            print(f"repeat {r + 1}/{args.repeats} {name}: {res['tok_per_s']:.0f} tok/s, "
                  f"MFU {res['mfu']:.3f}", file=sys.stderr, flush=True)
    out: dict = {"repeats": args.repeats, "steps": args.steps, "wall_s": 0.0, "cases": {}}
    for name, rs in runs.items():
        out["cases"][name] = {
            "loss_kernel": rs[0]["loss_kernel"],
            "tok_per_s": summary([r["tok_per_s"] for r in rs]),
            "mfu": summary([r["mfu"] for r in rs]),
        }
    x_paper = [r["x_paper_code"] for r in runs["paper_code"]]
    char_ratio = [
        b["tok_per_s"] / f["tok_per_s"]
        for b, f in zip(runs["char_bf16"], runs["char_fp32"], strict=True)
    ]
    out["targets"] = {
        "x_paper_code (>= 3)": summary(x_paper),
        "small bf16 MFU (>= 0.5)": out["cases"]["small_bf16"]["mfu"],
        "char fp32 MFU (>= 0.5)": out["cases"]["char_fp32"]["mfu"],
        "char bf16 / fp32 tok/s (>= 1.5)": summary(char_ratio),
    }
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
