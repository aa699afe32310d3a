"""``symbreak train``: train a model; :func:`symbreak.experiments.train_run` does the work."""

from __future__ import annotations

import argparse
from typing import Any

from symbreak import __version__


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model",
        description="Train a model. Config: defaults, then -c FILE.toml, then KEY=VALUE "
        "overrides such as model.preset=tiny sb.q=true sb.v=true optim.name=adamw "
        "train.max_steps=200 train.name=demo. See docs/reference/configuration.md for every "
        "key. Output: the run directory train.out_dir/train.name (created; a run already "
        "there is resumed; a file in the way is refused), locked against a second training "
        "process while this one runs.",
    )
    p.add_argument("-c", "--config", help="TOML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as TOML and exit"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.data import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_toml(), end="")
        return 0
    from symbreak.experiments.training import train_run
    from symbreak.train.distributed import is_main_process

    main_process = is_main_process()  # under torchrun only rank 0 talks
    sb = [
        f"b{k.upper()}" + (f"x{n}" if (n := getattr(cfg.sb, f"{k}_components", 1)) > 1 else "")
        for k in ("q", "k", "v")
        if getattr(cfg.sb, k)
    ]
    m = cfg.model
    if main_process:
        print(
            f"symbreak {__version__}: training '{cfg.train.name}': preset {m.preset} "
            f"(L{m.n_layer} H{m.n_head} C{m.n_embd} T{m.block_size}), "
            f"{cfg.optim.name} lr {cfg.optim.lr:g}, symmetry breaking: "
            f"{'+'.join(sb) + f' ({cfg.sb.mode})' if sb else 'off'}, "
            f"{cfg.total_steps} steps x {cfg.tokens_per_step} tokens",
            flush=True,
        )
    summary = train_run(cfg)
    if main_process:
        print("\n".join(summary.lines()))
    return 0
