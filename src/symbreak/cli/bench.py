"""``symbreak bench <target>``: the command-line side of the benchmarks.

:func:`register` adds ``bench`` to the top-level sub-commands; each target (``optim``,
``train``, ``positional``) is one ``add_<target>(targets)`` function listed in :data:`TARGETS`,
so adding a target is one function and one entry. Nothing here imports torch: building the
parser stays fast; the handlers import the benchmark when they run
(:func:`symbreak.bench.optim.bench_optim`, :func:`symbreak.bench.train.bench_train`,
:func:`symbreak.bench.positional.bench_positional`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from symbreak.bench import (
    DEFAULT_PRESET,
    DEFAULT_STEPS,
    DEFAULT_WARMUP,
    OPTIMIZERS,
    POSITIONAL_STEPS,
    POSITIONAL_WARMUP,
    TRAIN_STEPS,
    TRAIN_WARMUP,
)
from symbreak.cli.argtypes import int_range
from symbreak.config import MAX_THREADS, PRESETS

Subparsers = argparse._SubParsersAction  # what add_subparsers() returns


def register(subparsers: Subparsers) -> None:
    """Add ``bench`` and its targets to ``subparsers`` (from ``parser.add_subparsers()``).

    Each target sets ``func`` (``args -> exit code``), as the other commands do.
    """
    bench = subparsers.add_parser(
        "bench",
        help="micro-benchmarks: optimizer step cost, training throughput and MFU",
        description="Micro-benchmarks. Timings on a shared machine are noisy: compare the "
        "ratios measured within one run rather than milliseconds across runs.",
    )
    targets = bench.add_subparsers(dest="bench_target", required=True, metavar="TARGET")
    for add in TARGETS:
        add(targets)


def add_optim(targets: Subparsers) -> None:
    """``bench optim``: the cost of one optimizer step and the size of the optimizer state."""
    p = targets.add_parser(
        "optim",
        help="time optimizer.step() of AdamW, SGDM, SOAP and ECD",
        description="Time optimizer.step() of each optimizer (paper defaults) on a preset's "
        "GPT parameters with random gradients, interleaving the optimizers round by round, "
        "and report medians, ratios to AdamW and the optimizer state size. SOAP refreshes its "
        "eigenbases every 10 steps: keep --steps a multiple of 10 so that the mean is its "
        "amortised cost.",
    )
    p.add_argument(
        "--preset", choices=list(PRESETS), default=DEFAULT_PRESET, help="model size (%(default)s)"
    )
    _timing_args(
        p, DEFAULT_STEPS, DEFAULT_WARMUP, "per optimizer", "SOAP's first call is its set-up"
    )
    p.add_argument(
        "--optimizers",
        type=_optimizer_list,
        default=list(OPTIMIZERS),
        help=f"comma-separated subset of {','.join(OPTIMIZERS)} (default: all)",
    )
    p.add_argument(
        "--device", default="cpu", help="auto, cpu, cuda or cuda:N (default %(default)s)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for the model and every optimizer, e.g. model.n_layer=2",
    )
    p.set_defaults(func=_cmd_optim)


def add_train(targets: Subparsers) -> None:
    """``bench train``: tok/s, MFU and the symmetry-breaking overhead of full training steps."""
    p = targets.add_parser(
        "train",
        help="time full training steps: tok/s, MFU, symmetry-breaking overhead, loader speed",
        description="Time full training steps (forward, backward, optimizer step, gradient "
        "accumulation as configured) on random token batches, for the symmetry-broken model "
        "(sb.q=true sb.v=true unless overridden) and the symmetric one interleaved, and report "
        "tok/s, step times, model FLOPs, MFU against a matmul peak measured in the same run, "
        "the loader's own tok/s and peak memory. See symbreak.bench.train for every JSON key.",
    )
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        help="compute dtype; bf16 is autocast around the forward (default: train.dtype, "
        "auto = bf16 on CUDA and on CPUs with native bf16, else fp32)",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile both models; reports compile_s"
    )
    p.add_argument(
        "--compare-dense",
        action="store_true",
        help="with model.mlp=moe: also time the dense model of equal active size (one MLP "
        "moe_top_k experts wide) and the dense model of the expert width",
    )
    _timing_args(p, TRAIN_STEPS, TRAIN_WARMUP, "per model", "the first one compiles")
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="write a torch.profiler chrome trace of a few steps to FILE and list the top 10 "
        "operators; an existing directory: FILE is DIR/trace.json",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides as for `symbreak train`, e.g. model.preset=small "
        "train.batch_size=8 train.device=cuda",
    )
    p.set_defaults(func=_cmd_train)


def add_positional(targets: Subparsers) -> None:
    """``bench positional``: what each position encoding costs, ratios to NoPE."""
    p = targets.add_parser(
        "positional",
        help="time forward+backward steps per model.pos_encoding, ratios to none (NoPE)",
        description="Build one model per model.pos_encoding (same config otherwise, overrides "
        "as for `symbreak train`) and time a forward + backward of one micro-batch of random "
        "tokens for each, in interleaved rounds (the order rotating every round), and report "
        "the median and the fastest step time of each and their ratios to none. alibi passes "
        "an explicit attention bias, which the flash kernels do not take: the ratio shows what "
        "the slower kernel costs.",
    )
    p.add_argument(
        "--steps",
        type=int_range(1),
        default=POSITIONAL_STEPS,
        help=f"timed rounds (default {POSITIONAL_STEPS})",
    )
    p.add_argument(
        "--warmup",
        type=int_range(0),
        default=POSITIONAL_WARMUP,
        help=f"untimed rounds (default {POSITIONAL_WARMUP})",
    )
    p.add_argument(
        "--threads",
        type=int_range(0, MAX_THREADS),
        default=0,
        help="torch threads (default: torch's)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_cmd_positional)


TARGETS: tuple[Callable[[Subparsers], None], ...] = (add_optim, add_train, add_positional)


def _run(
    args: argparse.Namespace,
    bench: Callable[..., dict],
    table: Callable[[dict], str],
    *positional: Any,
    **kwargs: Any,
) -> int:
    """The frame every target shares: thread count, progress on stderr, a table or JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(*positional, log=lambda line: print(line, file=sys.stderr, flush=True), **kwargs)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


def _cmd_optim(args: argparse.Namespace) -> int:
    from symbreak.bench.optim import bench_optim, format_table

    return _run(
        args,
        bench_optim,
        format_table,
        args.preset,
        steps=args.steps,
        warmup=args.warmup,
        optimizers=args.optimizers,
        device=args.device,
        overrides=args.overrides,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from symbreak.bench.train import bench_train, format_table
    from symbreak.outputs import output_file

    if args.profile is not None:
        args.profile = str(output_file(args.profile, "trace.json", "--profile"))
    return _run(
        args,
        bench_train,
        format_table,
        args.overrides,
        steps=args.steps,
        warmup=args.warmup,
        dtype=args.dtype,
        compile=args.compile,
        profile=args.profile,
        compare_dense=args.compare_dense,
    )


def _cmd_positional(args: argparse.Namespace) -> int:
    import torch

    from symbreak.bench.positional import bench_positional, format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_positional(args.overrides, args.steps, args.warmup)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _timing_args(p: argparse.ArgumentParser, steps: int, warmup: int, unit: str, note: str) -> None:
    """Options every target shares: how many steps, how many warm-up steps, threads, JSON."""
    p.add_argument(
        "--steps",
        type=int_range(1),
        default=steps,
        help=f"measured steps {unit} (default %(default)s)",
    )
    p.add_argument(
        "--warmup",
        type=int_range(0),
        default=warmup,
        help=f"untimed steps {unit} first (default %(default)s; {note})",
    )
    p.add_argument(
        "--threads",
        type=int_range(1, MAX_THREADS),
        help="torch CPU threads (default: torch's); 1 is steadier on a machine shared "
        "with other jobs, where a thread left waiting stalls every parallel kernel",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _optimizer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a comma-separated subset of {','.join(OPTIMIZERS)}"
        )
    return names
