"""Optional metric sinks beside ``metrics.csv``: TensorBoard and Weights & Biases.

Neither is a dependency: each is imported only when its switch is on, and a missing package is a
clear error naming the package to install. W&B honours ``WANDB_MODE=offline``.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any, Protocol

from symbreak.config import Config
from symbreak.errors import ConfigError


class MetricSink(Protocol):
    def log(self, step: int, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and k != "step" and math.isfinite(float(v))
    }


class TensorBoardSink:
    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard=true needs the tensorboard package: "
                "pip install 'symbreak[tensorboard]' (or set train.tensorboard=false)"
            ) from None
        self._w = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, row: dict[str, Any]) -> None:
        for k, v in _numeric(row).items():
            self._w.add_scalar(k, v, step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class WandbSink:
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "train.wandb=true needs the wandb package: pip install 'symbreak[wandb]' "
                "(or set train.wandb=false)"
            ) from None
        # A stable id kept in the run directory, so a resumed run continues the same W&B run.
        id_file = run_dir / "wandb_id.json"
        run_id = json.loads(id_file.read_text())["id"] if id_file.exists() else uuid.uuid4().hex
        id_file.write_text(json.dumps({"id": run_id}))
        self._run = wandb.init(
            project="symbreak",
            name=cfg.train.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=cfg.to_dict(),
        )

    def log(self, step: int, row: dict[str, Any]) -> None:
        self._run.log(_numeric(row), step=step)

    def close(self) -> None:
        self._run.finish()


def build_loggers(cfg: Config, run_dir: Path) -> list[MetricSink]:
    sinks: list[MetricSink] = []
    if cfg.train.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tensorboard"))
    if cfg.train.wandb:
        sinks.append(WandbSink(cfg, run_dir))
    return sinks
