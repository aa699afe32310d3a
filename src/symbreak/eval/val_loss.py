"""Validation loss on a fixed held-out set of batches."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from symbreak.model import GPT


@torch.no_grad()
def evaluate_loss(
    model: GPT,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    ctx: contextlib.AbstractContextManager | None = None,
) -> float:
    """Mean cross-entropy per token over ``batches``, in eval mode (biases at ``sb.eval``).

    Batches may differ in size (the last one of a held-out set usually does), so each batch's
    mean is weighted by its token count. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with ctx if ctx is not None else contextlib.nullcontext():
                _, loss = model(x, y)
            total += loss.double() * y.numel()
            count += y.numel()
    finally:
        model.train(was_training)
    return (total / max(count, 1)).item()
