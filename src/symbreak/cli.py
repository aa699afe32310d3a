"""``symbreak <command>``: one entry point for every command.

User errors (:class:`~symbreak.errors.SymbreakError`) print one ``error: ...`` line and exit
with status 2; no traceback. Set ``SYMBREAK_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from symbreak import __version__
from symbreak.errors import SymbreakError


def _cmd_train(args: argparse.Namespace) -> int:
    from symbreak.config import Config

    cfg = Config.load(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_toml(), end="")
        return 0
    from symbreak.train.distributed import is_main_process
    from symbreak.train.trainer import train

    main_process = is_main_process()  # under torchrun only rank 0 talks
    sb = [k for k in ("q", "k", "v") if getattr(cfg.sb, k)]
    m = cfg.model
    if main_process:
        print(
            f"symbreak {__version__}: training '{cfg.train.name}': preset {m.preset} "
            f"(L{m.n_layer} H{m.n_head} C{m.n_embd} T{m.block_size}), "
            f"{cfg.optim.name} lr {cfg.optim.lr:g}, symmetry breaking: "
            f"{'+'.join('b' + k.upper() for k in sb) + f' ({cfg.sb.mode})' if sb else 'off'}, "
            f"{cfg.total_steps} steps x {cfg.tokens_per_step} tokens",
            flush=True,
        )
    summary = train(cfg)
    if main_process:
        print("\n".join(summary.lines()))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from symbreak.data import prepare_inputs

    meta = prepare_inputs(
        args.inputs,
        args.out,
        errors=args.encoding_errors,
        val_fraction=args.val_fraction,
    )
    counts = meta.get("tokens", {})
    print(
        f"wrote shards to {args.out}: "
        + ", ".join(f"{split} {n:,} tokens" for split, n in counts.items())
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symbreak",
        description="Train GPT-style transformers with symmetry breaking in attention.",
    )
    parser.add_argument("--version", action="version", version=f"symbreak {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train a model. Config: defaults, then -c FILE.toml, then KEY=VALUE "
        "overrides such as model.preset=tiny sb.q=true sb.v=true optim.name=adamw "
        "train.max_steps=200 train.name=demo. See README.md for every key.",
    )
    p.add_argument("-c", "--config", help="TOML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config as TOML and exit"
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "prepare",
        help="tokenize text files into llm.c shards",
        description="Tokenize text files or directories (GPT-2 BPE) into llm.c-format shards "
        "(*_train_*.bin, *_val_*.bin) usable with data.source=DIR.",
    )
    p.add_argument("inputs", nargs="+", help="text files or directories")
    p.add_argument("--out", required=True, help="output directory for the shards")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the text held out for validation (default 0.1)",
    )
    p.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="what to do with bytes that are not UTF-8 (default: strict, an error)",
    )
    p.set_defaults(func=_cmd_prepare)

    from symbreak.bench.cli import register as register_bench
    from symbreak.eval.cli import register as register_eval
    from symbreak.experiments.cli import register as register_experiments
    from symbreak.integrations.export import register as register_export

    register_eval(sub)
    register_bench(sub)
    register_experiments(sub)
    register_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options (`sweep GRID --jobs 2 train.seed=0`), which
    # argparse alone does not allow for a positional list.
    if extra and hasattr(args, "overrides") and all(
        "=" in a and not a.startswith("-") for a in extra
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except SymbreakError as e:
        if os.environ.get("SYMBREAK_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
