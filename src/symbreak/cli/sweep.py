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
    p.add_argument(
        "grid", type=Path, nargs="?", default=None, help="grid file (TOML); omit with --finetune"
    )
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
    p.add_argument(
        "--finetune",
        type=Path,
        default=None,
        metavar="SWEEP_DIR",
        help="fine-tune every finished cell of the pretraining sweep SWEEP_DIR on --task, as "
        "the sweep SWEEP_DIR-<task> beside it (same cell names, labels and seeds; resumable)",
    )
    p.add_argument(
        "--task",
        choices=("cot-arithmetic",),
        default="cot-arithmetic",
        help="--finetune: the task (default %(default)s)",
    )
    p.add_argument(
        "--examples",
        type=int_range(1),
        default=None,
        metavar="N",
        help="--finetune: training examples (default data.cot_train)",
    )
    p.add_argument(
        "--epochs",
        type=int_range(1),
        default=None,
        metavar="N",
        help="--finetune: epochs (default data.cot_epochs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.experiments.grid import load_grid
    from symbreak.experiments.sweep import run_sweep

    if args.wait and args.executor == "local":
        raise ExperimentError("--wait only applies to --executor slurm or submitit-local")
    if args.finetune is not None:
        if args.grid is not None and "=" in str(args.grid) and not args.grid.is_file():
            args.overrides, args.grid = [str(args.grid), *args.overrides], None
        if args.grid is not None:
            raise ExperimentError(
                "--finetune SWEEP_DIR takes the pretraining sweep's directory instead of a grid "
                "file; drop GRID (KEY=VALUE overrides apply to every fine-tuning cell)"
            )
        from symbreak.experiments.finetune import finetune_grid

        grid = finetune_grid(args.finetune, args.task, args.examples, args.epochs, args.overrides)
        if grid.skipped:
            print(f"not finished, not fine-tuned: {', '.join(grid.skipped)}")
        return run_sweep(grid, args.jobs, args.executor, args.dry_run, args.wait)
    if args.grid is None:
        raise ExperimentError("give a grid file (GRID.toml), or --finetune SWEEP_DIR")
    grid = load_grid(args.grid, args.overrides)
    return run_sweep(grid, args.jobs, args.executor, args.dry_run, args.wait)
