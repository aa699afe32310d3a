"""Options several commands share: which checkpoint, biases and device (``eval``, ``compare``,
``sample``) and which items (``eval``, ``compare``). Torch-free, like the whole parser."""

from __future__ import annotations

import argparse

from symbreak.cli.argtypes import int_range, seed
from symbreak.config import SB_EVAL_CHOICES
from symbreak.errors import SymbreakError
from symbreak.eval.options import BUILTIN_SUITES, DEFAULT_BATCH_SIZE, DEFAULT_PER_CATEGORY

positive = int_range(1)


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="latest|best|STEP",
        help="which checkpoint: latest (default), best (lowest val_loss recorded in its "
        "state.json) or a step number",
    )
    p.add_argument(
        "--sb-eval",
        choices=SB_EVAL_CHOICES,
        default=None,
        help="symmetry-breaking biases at evaluation (default: the run's sb.eval)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, cuda:N"
    )


def suite(value: str) -> str:
    """``--suite``: builtin, none or reasoning-gym:TASK[,TASK...] (checked while parsing)."""
    if value in BUILTIN_SUITES:
        return value
    from symbreak.eval import reasoning_gym

    try:
        if reasoning_gym.parse_suite(value) is not None:
            return value
    except SymbreakError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--suite {value!r}: ")) from None
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a suite: builtin, none or reasoning-gym:TASK[,TASK...]"
    )


def add_suite_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--puzzles",
        action="append",
        default=[],
        metavar="FILE.jsonl",
        help="score a puzzle file too (JSON Lines: category, prompt, and expected or compare); "
        "may be repeated",
    )
    p.add_argument(
        "--suite",
        type=suite,
        default="builtin",
        metavar="builtin|none|reasoning-gym:TASK[,TASK...]",
        help="the built-in procedural suite (default), none, or seeded reasoning-gym tasks "
        "(optional extra: pip install 'symbreak[reasoning-gym]')",
    )
    p.add_argument(
        "--suite-seed",
        type=seed,
        default=0,
        metavar="N",
        help="seed of the built-in suite (or reasoning-gym's create_dataset), 0 to 2^63-1 "
        "(default 0)",
    )
    p.add_argument(
        "--per-category",
        type=positive,
        metavar="N",
        default=DEFAULT_PER_CATEGORY,
        help=f"items per built-in category or reasoning-gym task (default {DEFAULT_PER_CATEGORY})",
    )
    p.add_argument(
        "--batch-size",
        type=positive,
        metavar="N",
        default=DEFAULT_BATCH_SIZE,
        help=f"sequences per forward pass (default {DEFAULT_BATCH_SIZE}); results do not "
        "depend on it",
    )
    p.add_argument(
        "--val",
        action="store_true",
        help="also measure validation loss on the run's held-out data (data.source, "
        "model.block_size, train.eval_tokens)",
    )


def model_kwargs(args: argparse.Namespace) -> dict:
    """``checkpoint``, ``sb_eval`` and ``device`` as keyword arguments."""
    return {"checkpoint": args.checkpoint, "sb_eval": args.sb_eval, "device": args.device}


def suite_kwargs(args: argparse.Namespace) -> dict:
    """The item and scoring options as keyword arguments of the evaluation functions."""
    return {
        "suite": args.suite,
        "suite_seed": args.suite_seed,
        "per_category": args.per_category,
        "puzzles": args.puzzles,
        "batch_size": args.batch_size,
        "val": args.val,
    }
