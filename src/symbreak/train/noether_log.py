"""``noether.csv``: the attention rotation charges of a run at every log step.

With ``train.log_noether=true`` the trainer calls :meth:`NoetherLog.log` at each log step,
after the optimizer step: one row per (layer, head, sector) with ``charge = |L|_F`` and
``relative = |L|_F / (|W|_F |P|_F)`` (maths in :mod:`symbreak.train.noether`), and the same
numbers as TensorBoard scalars ``noether/<sector>/L<layer>H<head>/{charge,relative}``. The cost
is a few batched matmuls per layer and one host synchronisation, only at log steps
(docs/performance.md has the measured figure). A resumed run drops the rows logged after its
checkpoint first, as ``metrics.csv`` does, so the file equals an uninterrupted run's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from symbreak.model import GPT
from symbreak.train.metrics import MetricsWriter
from symbreak.train.noether import (
    charges,
    momentum_state_key,
    optimizer_momentum,
    sector_params,
)

FILENAME = "noether.csv"
COLUMNS = ("step", "layer", "head", "sector", "charge", "relative")


class NoetherLog:
    """Writes ``noether.csv`` for one run; inert (with a warning) for optimizers without a
    momentum that has a charge (SOAP)."""

    def __init__(
        self,
        path: Path,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        resume_step: int | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.key, self.description = momentum_state_key(optimizer)
        self._warned_empty = False
        self.writer: MetricsWriter | None = None
        if self.key is None:
            warnings.warn(f"train.log_noether: {self.description}", RuntimeWarning, stacklevel=2)
            return
        self._params = [
            p for block in model.blocks for ps in sector_params(block.attn).values() for p in ps
        ]
        self.writer = MetricsWriter(Path(path), columns=COLUMNS, resume_step=resume_step)

    def log(self, step: int) -> dict[str, float]:
        """Append the rows of ``step``; return them as TensorBoard scalars ({} when inert)."""
        if self.writer is None:
            return {}
        assert self.key is not None
        state = self.optimizer.state
        if not self._warned_empty and not any(
            state.get(p, {}).get(self.key) is not None for p in self._params
        ):
            self._warned_empty = True
            warnings.warn(
                f"train.log_noether: the optimizer holds no {self.key!r} yet at step {step} "
                "(no momentum, or no step taken): charges are logged as 0",
                RuntimeWarning,
                stacklevel=2,
            )
        rows = charges(self.model, optimizer_momentum(self.optimizer, self.key)).rows(step)
        scalars: dict[str, float] = {}
        for r in rows:
            self.writer.write(**r)
            tag = f"noether/{r['sector']}/L{r['layer']}H{r['head']}"
            scalars[f"{tag}/charge"] = float(r["charge"])  # type: ignore[arg-type]
            scalars[f"{tag}/relative"] = float(r["relative"])  # type: ignore[arg-type]
        return scalars

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
