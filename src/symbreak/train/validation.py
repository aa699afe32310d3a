"""Validation loss on a fixed held-out set of batches."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from symbreak.model import GPT
from symbreak.targets import IGNORE_INDEX


@torch.no_grad()
def loss_sums(
    model: GPT,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    ctx: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """``[sum of per-token cross-entropy, target count]`` (float64) over ``batches``.

    Sums rather than a mean, so data-parallel ranks (whose shares of the held-out set may differ
    by a batch) can add theirs up before dividing. Runs in eval mode (biases at ``sb.eval``) and
    restores the model's mode afterwards.
    """
    was_training = model.training
    model.eval()
    out = torch.zeros(2, dtype=torch.float64, device=device)
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with ctx if ctx is not None else contextlib.nullcontext():
                _, loss = model(x, y)
            n = (y != IGNORE_INDEX).sum()  # the loss is a mean over the targets it uses
            out[0] += loss.double() * n
            out[1] += n
    finally:
        model.train(was_training)
    return out


def evaluate_loss(
    model: GPT,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    ctx: contextlib.AbstractContextManager | None = None,
) -> float:
    """Mean cross-entropy per token over ``batches`` (each batch weighted by its tokens)."""
    total, count = loss_sums(model, batches, device, ctx).tolist()
    return total / max(count, 1.0)
