"""Evaluation: validation loss, the puzzle suite and its scoring, run loading, sampling.

The CLI sub-commands (``eval``, ``compare``, ``sample``) live in :mod:`symbreak.eval.cli`; it
is not imported here, and matplotlib is imported only when ``compare`` draws its chart.
"""

from symbreak.eval.puzzles import CATEGORIES, Item, builtin_suite, read_puzzles, write_puzzles
from symbreak.eval.runs import Run, load_run
from symbreak.eval.sample import generate
from symbreak.eval.scoring import (
    ItemResult,
    ScoreRun,
    Summary,
    paired_differences,
    score_items,
    summarize,
    wilson_interval,
)
from symbreak.eval.val_loss import evaluate_loss

__all__ = [
    "CATEGORIES",
    "Item",
    "ItemResult",
    "Run",
    "ScoreRun",
    "Summary",
    "builtin_suite",
    "evaluate_loss",
    "generate",
    "load_run",
    "paired_differences",
    "read_puzzles",
    "score_items",
    "summarize",
    "wilson_interval",
    "write_puzzles",
]
