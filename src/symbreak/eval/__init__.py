"""Evaluation: validation loss, the puzzle suite and its scoring, comparing runs, sampling.

The functions behind ``symbreak eval``, ``compare`` and ``sample``
(:mod:`~symbreak.eval.evaluate`)::

    from symbreak.eval import compare_runs, evaluate_run, sample_run

    result = evaluate_run("runs/demo", val=True)  # writes runs/demo/eval/<checkpoint>.json
    print(result["overall"]["acc"]["macro"]["mean"])

Modules: :mod:`~symbreak.eval.puzzles` (the seeded suite, JSONL files),
:mod:`~symbreak.eval.scoring` (batched scoring, confidence intervals),
:mod:`~symbreak.runs` (strict loading of a run), :mod:`~symbreak.eval.sample`,
:mod:`~symbreak.eval.report` (tables, JSON, the compare chart), :mod:`~symbreak.eval.options`
(defaults, torch-free). The names below are imported on first use: importing this package
costs nothing (the command line reads :mod:`~symbreak.eval.options` without torch), and
training, which uses :func:`evaluate_loss`, neither pays for nor depends on the evaluation
modules.
"""

from __future__ import annotations

from symbreak.lazy import lazy_exports

_LAZY = {
    "evaluate_loss": "symbreak.train.validation",
    "evaluate_run": "symbreak.eval.evaluate",
    "evaluate_addition_run": "symbreak.eval.evaluate",
    "evaluate_cot_run": "symbreak.eval.evaluate",
    "compare_runs": "symbreak.eval.evaluate",
    "sample_run": "symbreak.eval.evaluate",
    "collect_items": "symbreak.eval.evaluate",
    "EvalResult": "symbreak.eval.evaluate",
    "CompareResult": "symbreak.eval.evaluate",
    "generate": "symbreak.eval.sample",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
