"""``symbreak noether RUN... --out FILE.png``: the runs' Noether charges against step;
:func:`symbreak.analysis.noether_plot.plot_noether` does the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak.analysis.options import NOETHER_QUANTITIES


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "noether",
        help="plot runs' Noether charges (train.log_noether) against step",
        description="Plot the attention rotation charges of one or more runs (their "
        "noether.csv, written with train.log_noether=true) against step, overlaid: one panel "
        "per layer and sector (Q-K, V-O), median (solid) and max (dashed) over heads, log "
        "scale.",
    )
    p.add_argument("run_dirs", metavar="RUN", type=Path, nargs="+", help="run directories")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="the figure")
    p.add_argument(
        "--quantity",
        choices=NOETHER_QUANTITIES,
        default="charge",
        help="charge = |L|_F (default) or relative = |L|_F / (|W|_F |P|_F)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.analysis.noether_plot import plot_noether, summary_lines

    runs = plot_noether(args.run_dirs, args.out, args.quantity)
    print("\n".join(summary_lines(runs)))
    print(f"wrote {args.out}")
    return 0
