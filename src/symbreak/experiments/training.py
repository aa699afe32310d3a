"""One training run as ``symbreak train`` makes it: the trainer with the task metrics its data
source calls for (:func:`symbreak.eval.tasks.task_metrics`)."""

from __future__ import annotations

from symbreak.config import Config
from symbreak.eval.tasks import task_metrics
from symbreak.train.trainer import RunSummary, train


def train_run(cfg: Config) -> RunSummary:
    """Train the resolved ``cfg`` into ``<train.out_dir>/<train.name>`` (resuming a run found
    there) and return its summary.

    Example::

        from symbreak.data import load_config
        from symbreak.experiments.training import train_run

        cfg = load_config("configs/demo.toml", ["train.max_steps=50", "train.name=try"])
        print("\\n".join(train_run(cfg).lines()))
    """
    return train(cfg, task_metrics=task_metrics(cfg))
