"""Micro-benchmarks behind ``symbreak bench``.

``bench optim`` (:func:`symbreak.bench.optim.bench_optim`): the cost of one optimizer step and
the size of the optimizer state. ``bench train`` (:func:`symbreak.bench.train.bench_train`):
training throughput, FLOPs, MFU against a matmul peak measured in the same run, and the cost of
symmetry breaking. ``bench positional`` (:func:`symbreak.bench.positional.bench_positional`):
the step time of each position encoding. This module stays free of torch imports so that
building the command-line parser (:mod:`symbreak.cli.bench`) is fast; the defaults shared by
the CLI and the functions live here, and the benchmark functions are imported on first use::

    from symbreak.bench import bench_optim

    result = bench_optim("tiny", steps=10, optimizers=["adamw", "ecd"])
    print(result["ecd_over_adamw"])
"""

from __future__ import annotations

from symbreak.config import OPTIM_DEFAULTS
from symbreak.lazy import lazy_exports

#: The optimizers ``bench optim`` knows, in table order (the names of ``optim.name``).
OPTIMIZERS: tuple[str, ...] = tuple(OPTIM_DEFAULTS)
DEFAULT_PRESET = "124m"  # GPT-2 small's parameter shapes: the paper's model
DEFAULT_WARMUP = 2  # SOAP's first call only sets up its eigenbases; the second is its first update
DEFAULT_STEPS = 10  # one whole SOAP preconditioning period (precondition_frequency = 10)

TRAIN_STEPS = 10  # bench train: measured steps per model
TRAIN_WARMUP = 2  # bench train: untimed steps per model (the first one compiles with --compile)

POSITIONAL_STEPS = 10  # bench positional: timed rounds (every encoding once per round)
POSITIONAL_WARMUP = 2  # bench positional: untimed rounds first

_LAZY = {
    "bench_optim": "symbreak.bench.optim",
    "bench_train": "symbreak.bench.train",
    "bench_positional": "symbreak.bench.positional",
}

__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_STEPS",
    "DEFAULT_WARMUP",
    "OPTIMIZERS",
    "POSITIONAL_STEPS",
    "POSITIONAL_WARMUP",
    "TRAIN_STEPS",
    "TRAIN_WARMUP",
    "bench_optim",
    "bench_positional",
    "bench_train",
]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
