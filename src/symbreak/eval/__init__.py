"""Evaluation: validation loss, the puzzle suite and its scoring, run loading, sampling.

Modules: :mod:`~symbreak.eval.puzzles` (the seeded suite, JSONL files),
:mod:`~symbreak.eval.scoring` (batched scoring, confidence intervals),
:mod:`~symbreak.runs` (strict loading of a run), :mod:`~symbreak.eval.sample`,
:mod:`~symbreak.eval.report` (tables, JSON, the compare chart), :mod:`~symbreak.eval.cli`.
Only :func:`evaluate_loss` is imported here: the trainer uses it, and training should neither
pay for nor depend on the evaluation modules.
"""

from symbreak.train.validation import evaluate_loss

__all__ = ["evaluate_loss"]
