"""The feed-forward block: ``c_proj(act(c_fc(x)))`` with width 4C.

``act`` is PReLU with one learnable negative slope per hidden feature (the paper's default,
slopes initialised from N(0.2, 1.0)) or GELU (tanh approximation, GPT-2's; the ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from symbreak.config import ModelConfig


class FeaturePReLU(nn.Module):
    """``max(0, x) + a * min(0, x)`` with one slope ``a_j`` per feature (last dimension).

    ``torch.nn.PReLU`` puts the channel on dimension 1, which for ``(B, T, F)`` would need two
    transposes; viewing the input as ``(B*T, F)`` puts the feature on dimension 1 for free and
    keeps the fused PReLU kernel (and its weight gradient).
    """

    def __init__(self, n_features: int, init_mean: float = 0.2, init_std: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_features))
        self.init_mean, self.init_std = init_mean, init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=self.init_mean, std=self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x.reshape(-1, x.shape[-1]), self.weight.to(x.dtype)).view(x.shape)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = 4 * cfg.n_embd
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        if cfg.activation == "prelu":
            self.act: nn.Module = FeaturePReLU(hidden, cfg.prelu_init_mean, cfg.prelu_init_std)
        else:
            self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))
