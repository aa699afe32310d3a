"""Micro-benchmarks behind ``symbreak bench``.

``bench optim`` (:func:`symbreak.bench.optim.bench_optim`): the cost of one optimizer step and
the size of the optimizer state. ``bench train`` (:mod:`symbreak.bench.train`): training
throughput, FLOPs, MFU against a matmul peak measured in the same run, and the cost of
symmetry breaking. This module stays free of torch imports so that building the
command-line parser (:mod:`symbreak.bench.cli`) is fast; the defaults shared by the CLI and the
functions live here.
"""

from symbreak.config import OPTIM_DEFAULTS

#: The optimizers ``bench optim`` knows, in table order (the names of ``optim.name``).
OPTIMIZERS: tuple[str, ...] = tuple(OPTIM_DEFAULTS)
DEFAULT_PRESET = "124m"  # the issue asks for GPT-2 small's parameter shapes
DEFAULT_WARMUP = 2  # SOAP's first call only sets up its eigenbases; the second is its first update
DEFAULT_STEPS = 10  # one whole SOAP preconditioning period (precondition_frequency = 10)

TRAIN_STEPS = 10  # bench train: measured steps per model
TRAIN_WARMUP = 2  # bench train: untimed steps per model (the first one compiles with --compile)

__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_STEPS",
    "DEFAULT_WARMUP",
    "OPTIMIZERS",
    "TRAIN_STEPS",
    "TRAIN_WARMUP",
]
