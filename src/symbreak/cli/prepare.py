"""``symbreak prepare``: tokenize text into llm.c shards; :func:`symbreak.data.prepare_inputs`
and :func:`symbreak.data.hf_dataset.prepare_hf_dataset` do the work."""

from __future__ import annotations

import argparse
from typing import Any

from symbreak.cli.argtypes import float_range, int_range
from symbreak.errors import SymbreakError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
