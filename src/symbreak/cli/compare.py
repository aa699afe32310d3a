"""``symbreak compare RUN_DIR RUN_DIR...``: several runs on the same items, side by side;
:func:`symbreak.eval.compare_runs` does the work."""

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
        "compare",
        help="score several runs on the same items, side by side with differences",
        description="Score every run on the same items and show the metrics side by side, "
        "with each run's difference to the first (paired bootstrap 95% CI over items) and a "
        "PNG bar chart per category.",
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", type=Path, nargs="+", help="two or more runs")
    add_model_options(p)
    add_suite_options(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for compare.json and compare.png (created if missing; default: "
        "compare-<run1>-vs-<run2>... next to the first run). A name ending in .json or .png "
        "names the files themselves: NAME.json and NAME.png side by side",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG chart")
    p.add_argument(
        "--task",
        choices=("puzzles", "cot-arithmetic"),
        default="puzzles",
        help="puzzles (default) or cot-arithmetic: two runs' greedy chain-of-thought answers "
        "on the same held-out problems, paired: accuracy difference with a paired bootstrap "
        "95%% interval and McNemar's exact test, per type and overall",
    )
    p.add_argument(
        "--problems",
        type=positive,
        default=None,
        metavar="N",
        help="--task cot-arithmetic: the first N held-out problems (default: all)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "cot-arithmetic":
        from symbreak.eval.cot import format_compare_cot
        from symbreak.eval.evaluate import compare_cot_runs

        data = compare_cot_runs(
            args.run_dirs,
            problems=args.problems,
            batch_size=args.batch_size,
            out=args.out,
            echo=lambda line: print(line, flush=True),
            **model_kwargs(args),
        )
        print()
        print(format_compare_cot(data["names"], data["differences"]))
        print(f"\nwrote {data['path']}")
        return 0
    from symbreak.eval import report
    from symbreak.eval.evaluate import compare_runs

    res = compare_runs(
        args.run_dirs,
        out=args.out,
        plot=not args.no_plot,
        echo=lambda line: print(line, flush=True),
        **model_kwargs(args),
        **suite_kwargs(args),
    )
    print()
    print(report.compare_table(res.names, res.summaries, res.diffs))
    if res.png is not None:
        print(f"\nwrote {res.png}")
    print(f"wrote {res.json_path}")
    return 0
