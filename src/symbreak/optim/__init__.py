"""Optimizers: AdamW, SGDM (torch), SOAP (pytorch-optimizer), ECD (ours), behind one factory."""

from symbreak.optim.ecd import ECD
from symbreak.optim.factory import (
    build_optimizer,
    lr_at,
    optimizer_step,
    param_groups,
    set_lr,
    state_bytes,
)

__all__ = [
    "ECD",
    "build_optimizer",
    "lr_at",
    "optimizer_step",
    "param_groups",
    "set_lr",
    "state_bytes",
]
