"""The task metrics a training run logs beside its validation loss, by data source.

The trainer (a floor below) knows no task: it is handed ``{column: metric(model) -> float}``
and logs each at every evaluation. This module decides which a run gets:

* ``data.source=addition``: ``exact_match``, greedy exact match on held-out problems (at most
  1,000 of ``data.addition_val``), so convergence (steps to 90%) is read off ``metrics.csv``.

Example::

    from symbreak.train.trainer import train
    summary = train(cfg, task_metrics=task_metrics(cfg))
"""

from __future__ import annotations

from symbreak.config import Config
from symbreak.train.trainer import TaskMetric


def task_metrics(cfg: Config) -> dict[str, TaskMetric]:
    """The metrics ``symbreak train`` logs for ``cfg``'s data source (none for plain text)."""
    if cfg.data.source == "addition":
        from symbreak.eval.addition import evaluate_addition

        n = min(cfg.data.addition_val, 1000)

        def exact_match(model: object) -> float:
            return evaluate_addition(model, cfg, n_problems=n)["exact_match"]["mean"]

        return {"exact_match": exact_match}
    return {}
