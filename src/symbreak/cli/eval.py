"""``symbreak eval RUN_DIR``: score a run on the puzzle suite (and validation loss), or on its
held-out addition problems; :func:`symbreak.eval.evaluate_run` does the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak.cli.options import (
    add_model_options,
    add_suite_options,
    model_kwargs,
    positive,
    suite_kwargs,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a trained run on the puzzle suite (and validation loss)",
        description="Load a run's checkpoint strictly and score it on the built-in puzzle "
        "suite (8 categories x 200 seeded items) and/or puzzle files: Top-1, Top-5, rank and "
        "cross-entropies with 95% confidence intervals. Prints a table and writes JSON.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    add_model_options(p)
    add_suite_options(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="where to write the JSON (default: RUN_DIR/eval/<checkpoint>.json); an existing "
        "directory: the JSON goes inside it as <checkpoint>.json",
    )
    p.add_argument(
        "--task",
        choices=("puzzles", "addition", "cot-arithmetic"),
        default="puzzles",
        help="puzzles (default: the suite and --puzzles files); addition: exact-match and "
        "per-digit accuracy of greedy answers to the run's held-out addition problems "
        "(data.source=addition; JSON default RUN_DIR/eval/addition_<checkpoint>.json); "
        "cot-arithmetic: exact match of greedy chains of thought on held-out arithmetic "
        "problems, per type, and the reference chain's log-probability (JSON default "
        "RUN_DIR/eval/<checkpoint>.cot-arithmetic.json)",
    )
    p.add_argument(
        "--shots",
        type=int,
        default=0,
        metavar="K",
        help="--task cot-arithmetic: put K worked training examples before each prompt "
        "(default 0; for runs that were not fine-tuned)",
    )
    p.add_argument(
        "--problems",
        type=positive,
        default=None,
        metavar="N",
        help="--task addition / cot-arithmetic: score the first N held-out problems (default: all)",
    )
    p.set_defaults(func=run)


def _say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    from symbreak.eval import report
    from symbreak.eval.evaluate import evaluate_addition_run, evaluate_run

    if args.task == "cot-arithmetic":
        from symbreak.errors import SymbreakError
        from symbreak.eval.cot import format_cot
        from symbreak.eval.evaluate import evaluate_cot_run

        if args.shots < 0:
            raise SymbreakError(f"--shots must be >= 0, got {args.shots}")
        res = evaluate_cot_run(
            args.run_dir,
            problems=args.problems,
            batch_size=args.batch_size,
            shots=args.shots,
            out=args.out,
            echo=_say,
            **model_kwargs(args),
        )
        print(format_cot(res.data))
        print(f"\nwrote {res.path}")
        return 0
    if args.task == "addition":
        from symbreak.eval.addition import format_addition

        res = evaluate_addition_run(
            args.run_dir,
            problems=args.problems,
            batch_size=args.batch_size,
            out=args.out,
            echo=_say,
            **model_kwargs(args),
        )
        print(format_addition(res.data))
        print(f"\nwrote {res.path}")
        return 0
    res = evaluate_run(
        args.run_dir, out=args.out, echo=_say, **model_kwargs(args), **suite_kwargs(args)
    )
    if res.score is not None and res.summary is not None:
        print(report.timing_line(res.score))
        print()
        print(report.eval_table(res.summary))
    print(f"\nwrote {res.path}")
    return 0
