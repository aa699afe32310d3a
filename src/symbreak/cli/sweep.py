"""``symbreak sweep GRID.toml``: train every cell of a grid;
:func:`symbreak.experiments.run_sweep` does the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak.cli.argtypes import int_range
from symbreak.errors import ExperimentError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train every cell of a grid of runs (resumable; local or Slurm)",
        description="Train every cell of GRID.toml (axes, named variants, seeds) as an "
        "ordinary run directory <out_dir>/<sweep>/<cell>/, skipping finished cells and "
        "resuming interrupted ones; writes <out_dir>/<sweep>/sweep.json. KEY=VALUE overrides "
        "apply to every cell. See docs/sweeps.md for the grid format.",
    )
    p.add_argument("grid", type=Path, help="grid file (TOML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument(
        "--jobs",
        type=int_range(1, 256),
        default=1,
        metavar="N",
        help="cells at once on this machine, splitting its cores between them (default 1)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local (default): child processes here; slurm: a Slurm job array through "
        "submitit; submitit-local: the Slurm code path run here by submitit",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the cells and what would run; run nothing"
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="with a submitit executor: block until every job has ended",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.experiments.grid import load_grid
    from symbreak.experiments.sweep import run_sweep

    if args.wait and args.executor == "local":
        raise ExperimentError("--wait only applies to --executor slurm or submitit-local")
    grid = load_grid(args.grid, args.overrides)
    return run_sweep(grid, args.jobs, args.executor, args.dry_run, args.wait)
