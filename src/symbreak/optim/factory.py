"""One factory from ``optim.*`` config to a torch optimizer, its parameter groups and its lr.

Defaults are the paper's (DESIGN.md section 2; :data:`symbreak.config.OPTIM_DEFAULTS`).
"""

from __future__ import annotations

import torch
from torch import nn

from symbreak.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """Split parameters into decayed and not-decayed groups.

    Matrices (Linear weights, the token embedding) are decayed; vectors (biases, LayerNorm
    weights, PReLU slopes) and the positional table are not, as in nanoGPT. ``decay_all``
    decays everything, as the paper's runs did.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if decay_all or (p.dim() >= 2 and not name.endswith("wpe.weight")):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, seed: int = 0) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``model``'s parameters (config must be resolved)."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_all)
    device_is_cuda = next(model.parameters()).is_cuda
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            groups,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            fused=device_is_cuda or None,
            foreach=None if device_is_cuda else True,
        )
    if cfg.name == "sgdm":
        opt = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True
        )
        if cfg.init_velocity_std > 0:
            seed_velocity(opt, cfg.init_velocity_std, seed)
        return opt
    if cfg.name == "soap":
        from pytorch_optimizer import SOAP

        # Settings of the paper's runs; the library swallows unknown kwargs, so only its own
        # names are used here (max_precond_dim / normalize_grads would be silently ignored).
        return SOAP(
            groups,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            shampoo_beta=None,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            precondition_frequency=cfg.precondition_frequency,
            max_precondition_dim=10000,
            merge_dims=False,
            precondition_1d=False,
            normalize_gradient=False,
            data_format="channels_first",
            correct_bias=True,
        )
    if cfg.name == "ecd":
        from symbreak.optim.ecd import ECD

        return ECD(
            groups,
            lr=cfg.lr,
            eta=cfg.eta,
            F0=cfg.F0,
            nu=cfg.nu,
            cons_en=cfg.cons_en,
            projection=cfg.projection,
            seed=seed,
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def seed_velocity(opt: torch.optim.SGD, std: float, seed: int) -> None:
    """Start SGD's momentum buffers at N(0, std^2) instead of zero ("SGDM with initial velocity").

    torch's SGD creates ``momentum_buffer`` from the first gradient only when it is absent, so a
    pre-filled buffer is used as the initial velocity.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for group in opt.param_groups:
        for p in group["params"]:
            v = torch.randn(p.shape, generator=gen, dtype=p.dtype) * std
            opt.state[p]["momentum_buffer"] = v.to(p.device)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """The learning rate applied at optimizer step ``step`` (0-based).

    ``constant`` (the paper's) after an optional linear warm-up of ``optim.warmup_steps``.
    """
    del total_steps  # used by the decaying schedules
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held in optimizer state tensors (for the memory comparison of optimizers)."""
    return sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v)
    )
