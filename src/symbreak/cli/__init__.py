"""``symbreak <command>``: one entry point for every command.

User errors (:class:`~symbreak.errors.SymbreakError`) print one ``error: ...`` line and exit
with status 2; no traceback. What the machine refuses where no command expected it (an
``OSError`` such as a full disk or a denied permission, running out of memory) prints one line
too and exits with status 1. Set ``SYMBREAK_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from symbreak import __version__
from symbreak.allocator import reuse_freed_memory
from symbreak.cli.argtypes import float_range, int_range
from symbreak.data import load_config
from symbreak.errors import SymbreakError


def _cmd_train(args: argparse.Namespace) -> int:

    cfg = load_config(args.config, args.overrides)
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

    if bool(args.inputs) == bool(args.hf_dataset):
        raise SymbreakError("prepare takes text files/directories or --hf-dataset NAME (one)")
    if args.hf_dataset:
        from symbreak.data.hf_dataset import prepare_hf_dataset

        if args.tokenizer != "gpt2":
            raise SymbreakError("--hf-dataset tokenizes with GPT-2 BPE; drop --tokenizer char")
        meta = prepare_hf_dataset(
            args.hf_dataset,
            args.out,
            config=args.hf_name,
            split=args.split,
            text_field=args.text_field,
            max_tokens=args.max_tokens,
            val_fraction=args.val_fraction,
            workers=args.workers,
        )
    else:
        meta = prepare_inputs(
            args.inputs,
            args.out,
            errors=args.encoding_errors,
            val_fraction=args.val_fraction,
            tokenizer=args.tokenizer,
        )
    counts = meta.get("tokens", {})
    skipped = meta.get("skipped", [])
    if skipped:
        shown = ", ".join(f"{s['input']} ({s['reason']})" for s in skipped[:10])
        more = f" and {len(skipped) - 10} more (see meta.json)" if len(skipped) > 10 else ""
        print(f"skipped {len(skipped)} file(s) that are not text: {shown}{more}")
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
        "train.max_steps=200 train.name=demo. See README.md for every key. Output: the run "
        "directory train.out_dir/train.name (created; a run already there is resumed; a file in "
        "the way is refused), locked against a second training process while this one runs.",
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
        description="Tokenize text files or directories (GPT-2 BPE, or characters) into "
        "llm.c-format shards (*_train_*.bin, *_val_*.bin) usable with data.source=DIR. In a "
        "directory, hidden files, token shards, a prepared dataset's meta.json and binary files "
        "are skipped and listed.",
    )
    p.add_argument("inputs", nargs="*", help="text files or directories")
    p.add_argument(
        "--hf-dataset",
        metavar="NAME",
        help="stream a Hugging Face dataset instead (a hub name such as "
        "HuggingFaceFW/fineweb-edu, or a local directory of JSON Lines/Parquet files); needs "
        "the datasets package (symbreak[hf-data]) and, for a hub name, the network",
    )
    p.add_argument("--hf-name", metavar="CONFIG", help="the dataset's config, e.g. sample-10BT")
    p.add_argument("--split", default="train", help="with --hf-dataset: which split (train)")
    p.add_argument(
        "--text-field", default="text", help="with --hf-dataset: the field holding text (text)"
    )
    p.add_argument(
        "--max-tokens",
        type=int_range(0),
        default=0,
        metavar="N",
        help="with --hf-dataset: stop after about N tokens (0: the whole split)",
    )
    p.add_argument(
        "--workers",
        type=int_range(0, 1024),
        default=0,
        metavar="N",
        help="with --hf-dataset: tokenizer threads (0: every core)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output directory for the shards: a new or empty directory (one holding anything "
        "is refused, a file too)",
    )
    p.add_argument(
        "--val-fraction",
        type=float_range(0.0, 1.0, low_open=True, high_open=True),
        default=0.1,
        help="share of the text held out for validation (default 0.1)",
    )
    p.add_argument(
        "--tokenizer",
        choices=("gpt2", "char"),
        default="gpt2",
        help="gpt2 (default): GPT-2 BPE; char: one id per character of the inputs (the "
        "vocabulary is stored in meta.json; model.vocab_size then follows the data)",
    )
    p.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="what to do with bytes that are not UTF-8 (default: strict, an error)",
    )
    p.set_defaults(func=_cmd_prepare)

    from symbreak.analysis.cli import register as register_analyze
    from symbreak.analysis.noether_plot import register as register_noether
    from symbreak.analysis.probe_cli import register as register_probe
    from symbreak.bench.cli import register as register_bench
    from symbreak.eval.cli import register as register_eval
    from symbreak.experiments.cli import register as register_experiments
    from symbreak.integrations.export import register as register_export

    register_eval(sub)
    register_bench(sub)
    register_experiments(sub)
    register_noether(sub)
    register_analyze(sub)
    register_probe(sub)
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
    reuse_freed_memory()
    try:
        return args.func(args)
    except SymbreakError as e:
        if os.environ.get("SYMBREAK_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, MemoryError, RuntimeError) as e:
        # What the machine refuses (a full disk, a permission, memory) also ends in one line;
        # any other RuntimeError is a bug and keeps its traceback.
        if os.environ.get("SYMBREAK_DEBUG") or not _environmental(e):
            raise
        print(f"error: {_describe_environmental(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _environmental(e: BaseException) -> bool:
    return isinstance(e, OSError | MemoryError) or type(e).__name__ == "OutOfMemoryError"


def _describe_environmental(e: BaseException) -> str:
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (
        f"out of memory{' (' + first + ')' if first else ''}; use a smaller model, "
        "train.batch_size or train.micro_batch_size"
    )


if __name__ == "__main__":
    sys.exit(main())
