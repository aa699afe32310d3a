"""``symbreak sample RUN_DIR --prompt TEXT``: continue a prompt; :func:`symbreak.eval.sample_run`
does the work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from symbreak.cli.argtypes import float_range, int_range, seed
from symbreak.cli.options import add_model_options, model_kwargs


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample",
        help="generate text from a trained run",
        description="Continue a prompt with a trained model (seeded; stops at end-of-text; "
        "the context is cropped to model.block_size).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    p.add_argument("--prompt", required=True, help="text to continue ('' starts a document)")
    p.add_argument("--max-new-tokens", type=int_range(0), default=100, help="default 100")
    p.add_argument(
        "--temperature",
        type=float_range(0.0),
        default=1.0,
        help="a finite number >= 0 (default 1.0); 0 is greedy decoding",
    )
    p.add_argument("--top-k", type=int_range(0), default=50, help="default 50; 0 keeps every token")
    p.add_argument("--seed", type=seed, default=0, help="sampling seed, 0 to 2^63-1 (default 0)")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.eval.evaluate import sample_run

    sample = sample_run(
        args.run_dir,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k or None,
        seed=args.seed,
        echo=lambda line: print(line, file=sys.stderr, flush=True),
        **model_kwargs(args),
    )
    print(args.prompt + sample.text)
    end = "end-of-text" if sample.stopped_at_eot else f"{len(sample.new_ids)} new tokens"
    print(f"[{end}; seed {args.seed}]", file=sys.stderr)
    return 0
