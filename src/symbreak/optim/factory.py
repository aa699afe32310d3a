"""One factory from ``optim.*`` config to a torch optimizer, its parameter groups and its lr.

Defaults are the paper's (:data:`symbreak.config.OPTIM_DEFAULTS`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from symbreak.config import OptimConfig

# Parameters of symbreak.model.mlp.MoE that are per-expert vectors stacked into matrices.
STACKED_VECTORS = ("mlp.fc_bias", "mlp.proj_bias", "mlp.prelu_slope")


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """Split parameters into decayed and not-decayed groups.

    Matrices (Linear weights, the token embedding, stacked expert weights) are decayed;
    vectors (biases, LayerNorm weights, PReLU slopes) and the positional table are not, as in
    nanoGPT. A mixture of experts stacks its biases and slopes into (E, H) tensors, vectors all
    the same: they are told apart by name. ``decay_all`` decays everything, as the paper's runs
    did.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        vector = p.dim() < 2 or name.endswith(STACKED_VECTORS)
        if decay_all or not (vector or name.endswith("wpe.weight")):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, seed: int = 0, adamw_fused: bool = True
) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``model``'s parameters (config must be resolved).
    ``adamw_fused=False`` gives torch's foreach AdamW (``bench optim`` times it as a reference)."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_all)
    if cfg.name == "adamw":
        # torch's fused kernel (one pass over p, g, m, v per tensor) on CPU as on CUDA: measured
        # 5-6x faster than the foreach path on the 2-core CPU (docs/performance.md).
        device = next(model.parameters()).device.type
        fused = adamw_fused and device in ("cpu", "cuda")
        return torch.optim.AdamW(
            groups,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            fused=fused or None,
            foreach=None if fused else True,
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
    """The learning rate applied at optimizer step ``step`` (0-based) of ``total_steps``.

    A linear warm-up over ``optim.warmup_steps`` (from lr/warmup to lr), then, with
    ``p = (step - warmup) / (total - warmup)`` in [0, 1) and ``lo = lr * min_lr_ratio``:

    * ``constant`` (the paper's): ``lr``
    * ``cosine``: ``lo + (lr - lo) (1 + cos(pi p)) / 2``
    * ``linear``: ``lr - (lr - lo) p``
    * ``wsd`` (warmup-stable-decay): ``lr`` until the last ``wsd_decay_fraction`` of the steps,
      then linear down to ``lo`` over them.

    The last step's lr is one decrement above ``lo``, so no step is wasted at lr = 0.
    """
    lr, warm = cfg.lr, cfg.warmup_steps
    if warm > 0 and step < warm:
        return lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return lr
    lo = lr * cfg.min_lr_ratio
    span = max(1, total_steps - warm)
    p = min(max((step - warm) / span, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
    if cfg.schedule == "linear":
        return lr - (lr - lo) * p
    if cfg.schedule == "wsd":
        decay = max(1, round(span * cfg.wsd_decay_fraction))
        q = (step - warm - (span - decay)) / decay
        return lr if q < 0 else lr - (lr - lo) * q
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor | float) -> None:
    """``opt.step()``, handing the step's loss to optimizers that use it (ECD's V)."""
    if getattr(opt, "needs_loss", False):
        opt.step(loss=loss)
    else:
        opt.step()


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state that scale with the model.

    Counts tensors held directly or in lists/dicts (SOAP keeps its ``GG`` and ``Q`` matrices in
    lists) and leaves out 0-d tensors (AdamW's per-tensor step counters), so AdamW is exactly 2
    floats per parameter, and SGDM and ECD exactly 1.
    """

    def size(v: object) -> int:
        if torch.is_tensor(v):
            return v.numel() * v.element_size() if v.dim() > 0 else 0
        if isinstance(v, list | tuple):
            return sum(size(x) for x in v)
        if isinstance(v, dict):
            return sum(size(x) for x in v.values())
        return 0

    return sum(size(s) for s in opt.state.values())
