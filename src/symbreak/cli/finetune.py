"""``symbreak finetune RUN_DIR --task cot-arithmetic``: fine-tune a finished run on a task;
:func:`symbreak.experiments.finetune.finetune_config` and ``finetune_run`` do the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak import __version__

TASKS = ("cot-arithmetic",)  # symbreak.experiments.finetune.TASKS, without importing torch


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a finished run on a task (chain-of-thought arithmetic)",
        description="Start a new run directory from RUN_DIR's latest checkpoint "
        "(model.init_from), keeping its model and symmetry-breaking settings, and train it on "
        "the task's chain and answer tokens for whole epochs (AdamW lr 3e-4, cosine, unless "
        "KEY=VALUE says otherwise). Running the same command again resumes it. See "
        "docs/finetuning.md.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished pretraining run")
    p.add_argument("--task", choices=TASKS, default=TASKS[0], help="the task (default %(default)s)")
    p.add_argument(
        "--examples",
        type=int,
        default=None,
        metavar="N",
        help="training examples (default data.cot_train, 10000)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="N",
        help="epochs over the examples (default data.cot_epochs, 5)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="the new run directory (default: RUN_DIR-<task> beside RUN_DIR)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as TOML and exit"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.experiments.finetune import finetune_config, finetune_run
    from symbreak.train.distributed import is_main_process

    cfg = finetune_config(
        args.run_dir, args.task, args.examples, args.epochs, args.out, args.overrides
    )
    if args.print_config:
        print(cfg.to_toml(), end="")
        return 0
    main_process = is_main_process()
    if main_process:
        d = cfg.data
        print(
            f"symbreak {__version__}: fine-tuning {args.run_dir} on {args.task} into "
            f"{Path(cfg.train.out_dir) / cfg.train.name}: {d.cot_train} examples x "
            f"{d.cot_epochs} epochs = {cfg.total_steps} steps of {cfg.train.batch_size}, "
            f"{cfg.optim.name} lr {cfg.optim.lr:g}",
            flush=True,
        )
    summary = finetune_run(cfg)
    if main_process:
        print("\n".join(summary.lines()))
    return 0
