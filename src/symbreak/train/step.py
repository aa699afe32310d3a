"""One optimizer step, the same in ``symbreak train`` and in ``symbreak bench train``::

    pin the symmetry-breaking draws of this step (keyed by (seed, step, layer): all ranks agree;
        with a component per sequence, keyed by each sequence's index in the global batch)
    for each micro-batch of this rank:  loss_m = CE(model(x), y) + router penalty (MoE only)
                                        (loss_m / accum).backward()
    all-reduce [mean loss, stop flag, mean CE, MoE stats]   (DDP has averaged the gradients)
    if the loss is finite: clip (optional); optimizer.step()   (ECD also receives the loss)
    zero the gradients

The benchmark times this very object, so what it measures cannot drift from what training runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from symbreak.compiling import CompiledOrEager
from symbreak.model import GPT
from symbreak.optim import optimizer_step
from symbreak.train.distributed import DistEnv

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepResult:
    # the global mean cross-entropy of the step (over micro-batches and ranks); the objective
    # the optimizer minimised adds the router penalty of a mixture-of-experts MLP to it
    loss: float
    stop: bool  # some rank was asked to stop (SIGINT/SIGTERM) during the step
    updated: bool  # False when the objective was not finite: the step changed no weight
    # mixture of experts only: [aux, z, load fractions (n_layer x E, row-major)], global means
    moe: list[float] | None = None


class TrainStep:
    """Forward, backward and update for one optimizer step of ``model``.

    ``env`` is the data-parallel environment (a single process by default): with more than one
    rank the model is wrapped in DDP, or, with ``fsdp``, expected to be sharded already.
    ``compile`` runs the forward through ``torch.compile`` (eager after one warning if that
    fails; ``compile_labels`` name the setting in that warning). ``autocast`` makes the context
    each forward runs in (bf16 autocast, or nothing).

    Example::

        step = TrainStep(model, optimizer, autocast=lambda: autocast(dev, dtype))
        result = step(0, [(x, y)])   # result.loss, result.updated
    """

    def __init__(
        self,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        env: DistEnv | None = None,
        grad_clip: float = 0.0,
        fsdp: bool = False,
        compile: bool = False,
        compile_labels: tuple[str, str] = ("train.compile=true", "train.compile=false"),
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.env = env if env is not None else DistEnv(device=next(model.parameters()).device)
        self.device = self.env.device
        self.autocast, self.grad_clip, self.fsdp = autocast, grad_clip, fsdp
        self.ddp = self.env.enabled and not fsdp
        self.wrapped: torch.nn.Module = DistributedDataParallel(model) if self.ddp else model
        self.forward: Callable[..., Any] = (
            CompiledOrEager(self.wrapped, *compile_labels) if compile else self.wrapped
        )

    @property
    def compiled(self) -> bool:
        """Whether the forward really runs compiled (False when compiling fell back to eager)."""
        return isinstance(self.forward, CompiledOrEager) and not self.forward.failed

    def __call__(
        self,
        step: int,
        micro_batches: Sequence[Batch],
        stop_requested: Callable[[], bool] | None = None,
    ) -> StepResult:
        """Run step ``step`` on this rank's ``micro_batches``. ``stop_requested`` is asked after
        the backward passes (a signal that arrives during the step stops the run after it)."""
        self.model.train()
        self.model.pin_biases(step)
        sums = self._accumulate(step, micro_batches)
        stop = stop_requested is not None and stop_requested()
        # One all-reduce and one host sync per step: [objective, stop flag, cross-entropy,
        # MoE statistics...], the means over micro-batches and ranks (the flag: a count).
        stats = sums / len(micro_batches)
        stats[1] = float(stop)
        self.env.all_reduce(stats)
        stats[0] /= self.env.world_size
        stats[2:] /= self.env.world_size
        objective, stop_votes, loss, *moe = stats.tolist()
        updated = math.isfinite(objective)
        if updated:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            optimizer_step(self.optimizer, stats[0])
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss, stop_votes > 0, updated, moe or None)

    def _accumulate(self, step: int, micro_batches: Sequence[Batch]) -> torch.Tensor:
        """Forward and backward of every micro-batch; the sums of their (detached) objective,
        a 0 (the stop flag's slot), cross-entropy and MoE statistics, in the loss's own dtype
        (float32 under bf16 autocast; float64 for a float64 model). For a dense MLP the
        objective is the cross-entropy."""
        loss_sum: torch.Tensor | None = None
        n = len(micro_batches)
        offset = 0  # this rank's sequences so far; rank r holds global rows r, r + W, ...
        for i, (x, y) in enumerate(micro_batches):
            if self.model.components_per_sequence:
                rows = range(offset, offset + x.shape[0])
                self.model.pin_biases(step, [self.env.rank + self.env.world_size * j for j in rows])
            offset += x.shape[0]
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            last = i == n - 1
            if self.fsdp:  # reduce-scatter the gradients once, after the last micro-batch
                self.model.set_requires_gradient_sync(last)  # type: ignore[operator]
            sync = (
                self.wrapped.no_sync()  # type: ignore[operator]
                if self.ddp and not last
                else contextlib.nullcontext()
            )
            with sync:
                with self.autocast():
                    _, loss = self.forward(x, y)
                terms = self.model.moe_terms()
                objective = loss if terms is None else loss + terms.penalty.to(loss.dtype)
                (objective / n).backward()
            parts = [objective.detach().reshape(1), torch.zeros_like(loss).reshape(1)]
            parts.append(loss.detach().reshape(1))
            if terms is not None:
                parts.append(terms.values().to(loss.dtype))
            row = torch.cat(parts)
            loss_sum = row if loss_sum is None else loss_sum + row
        assert loss_sum is not None, "a step needs at least one micro-batch"
        return loss_sum
