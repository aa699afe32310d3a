"""The feed-forward block: ``c_proj(act(c_fc(x)))`` of hidden width H (``model.mlp_hidden``,
by default 4C), or a mixture of such MLPs (``model.mlp=moe``).

``act`` is PReLU with one learnable negative slope per hidden feature (the paper's default,
slopes initialised from N(0.2, 1.0)) or GELU (tanh approximation, GPT-2's; the ablation).

The mixture of experts (:class:`MoE`), per token ``x`` (C) with E experts and top-k routing::

    p      = softmax(W_r x)                         router probabilities, (E,), W_r: (E, C)
    S      = the k experts of largest p             ties: the lower expert index first
    w_e    = p_e / sum_{j in S} p_j   (e in S)      renormalised over the chosen (Mixtral)
    y      = sum_{e in S} w_e  c_proj_e(act_e(c_fc_e(x)))

Dropless: every token reaches all k of its experts (no capacity, nothing dropped). Each expert
is a whole MLP of width H, as in Mixtral, so a token's active MLP parameters are k times the
dense MLP's. Over the N tokens of a forward the load-balancing loss (Switch Transformer, Fedus
et al. 2021; Mixtral's, with k slots per token) and the router z-loss (ST-MoE, Zoph et al. 2022)
are::

    f_e  = (slots routed to e) / (N k)              fraction of the N k token-slots
    P_e  = (1/N) sum_tokens p_e                     mean router probability
    aux  = E sum_e f_e P_e                          1 when both are uniform
    z    = (1/N) sum_tokens logsumexp(W_r x)^2

``f_e`` is a count (no gradient); the gradient reaches the router through ``P_e``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from symbreak.config import ModelConfig


def mlp_width(cfg: ModelConfig) -> int:
    """The hidden width H: ``model.mlp_hidden``, or 4C when it is 0."""
    return cfg.mlp_hidden or 4 * cfg.n_embd


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
        hidden = mlp_width(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        if cfg.activation == "prelu":
            self.act: nn.Module = FeaturePReLU(hidden, cfg.prelu_init_mean, cfg.prelu_init_std)
        else:
            self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class MoE(nn.Module):
    """Dropless top-k mixture of E expert MLPs (module docstring for the maths).

    The experts' weights are stacked parameters, so optimizers, DDP and FSDP see ordinary
    tensors and every expert's weights take part in every forward (an expert that got no token
    receives a zero gradient, never none: DDP needs no ``find_unused_parameters``):
    ``fc_weight`` (E, C, H), ``fc_bias`` (E, H), ``proj_weight`` (E, H, C), ``proj_bias``
    (E, C), ``prelu_slope`` (E, H) with PReLU; the router ``router.weight`` (E, C), no bias.

    After each forward, :attr:`aux`, :attr:`z` (tensors in the graph) and :attr:`load` (``f_e``,
    detached) hold that forward's routing statistics; :meth:`symbreak.model.GPT.moe_terms`
    collects them over the layers.
    """

    def __init__(self, cfg: ModelConfig, n_layer: int) -> None:
        super().__init__()
        E, C, H = cfg.moe_experts, cfg.n_embd, mlp_width(cfg)
        self.n_experts, self.top_k = E, cfg.moe_top_k
        self.router = nn.Linear(C, E, bias=False)
        self.fc_weight = nn.Parameter(torch.empty(E, C, H))
        self.proj_weight = nn.Parameter(torch.empty(E, H, C))
        self.fc_bias = nn.Parameter(torch.empty(E, H)) if cfg.bias else None
        self.proj_bias = nn.Parameter(torch.empty(E, C)) if cfg.bias else None
        self.prelu = cfg.activation == "prelu"
        self.prelu_slope = nn.Parameter(torch.empty(E, H)) if self.prelu else None
        self._slope_init = (cfg.prelu_init_mean, cfg.prelu_init_std)
        self._proj_scale = 1.0 / math.sqrt(2 * n_layer)
        self.dropout = nn.Dropout(cfg.dropout)
        self.aux: torch.Tensor | None = None
        self.z: torch.Tensor | None = None
        self.load: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Each expert as the dense MLP (``GPT.reset_parameters``): weights N(0, std), the
        output projection scaled by 1/sqrt(2 L), biases 0, PReLU slopes N(mean, std^2)."""
        nn.init.normal_(self.fc_weight, mean=0.0, std=std)
        nn.init.normal_(self.proj_weight, mean=0.0, std=std * self._proj_scale)
        for b in (self.fc_bias, self.proj_bias):
            if b is not None:
                nn.init.zeros_(b)
        if self.prelu_slope is not None:
            nn.init.normal_(self.prelu_slope, mean=self._slope_init[0], std=self._slope_init[1])

    def route(self, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(logits (N, E), probs (N, E), chosen experts (N, k), their renormalised weights
        (N, k))``; probabilities in at least float32.

        The top k come from a stable descending sort, so tied probabilities go to the lower
        expert index (``torch.topk`` documents no order for ties); the chosen experts are in
        decreasing probability."""
        logits = self.router(x2)
        acc = torch.promote_types(logits.dtype, torch.float32)
        logits = logits.to(acc)
        probs = torch.softmax(logits, dim=-1)
        top_p, top_e = probs.sort(dim=-1, descending=True, stable=True)
        top_p, top_e = top_p[:, : self.top_k], top_e[:, : self.top_k]
        return logits, probs, top_e, top_p / top_p.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        N, E, k = x2.shape[0], self.n_experts, self.top_k
        logits, probs, top_e, weights = self.route(x2)
        # Token-slots grouped by expert: a stable sort of the N k expert ids, so that each
        # expert's tokens are one contiguous block (in token order within it).
        flat_e = top_e.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        counts = torch.bincount(flat_e, minlength=E)
        xs = x2[order // k]
        # One matmul pair per expert over its block. torch's grouped matmul
        # (F.grouped_mm) was measured no faster than this loop on CPU (E=8, C=128, H=512,
        # 2048 tokens: 3.3 vs 2.9 ms), rejects float64 (the reference tests) and failed on
        # small shapes there; the loop runs everywhere, at the price of one host read of the
        # counts per layer.
        outs = []
        start = 0
        for e, n in enumerate(counts.tolist()):
            xe = xs[start : start + n]
            start += n
            h = xe @ self.fc_weight[e]
            if self.fc_bias is not None:
                h = h + self.fc_bias[e].to(h.dtype)
            if self.prelu_slope is not None:
                h = F.prelu(h, self.prelu_slope[e].to(h.dtype))
            else:
                h = F.gelu(h, approximate="tanh")
            y = h @ self.proj_weight[e]
            if self.proj_bias is not None:
                y = y + self.proj_bias[e].to(y.dtype)
            outs.append(y)
        ys = torch.cat(outs)
        ys = ys * weights.reshape(-1)[order].to(ys.dtype)[:, None]
        # back to token-slot order, then the k slots of each token summed in routing order
        slots = torch.empty_like(ys)
        slots[order] = ys
        out = slots.view(N, k, -1).sum(dim=1)
        with torch.no_grad():
            self.load = counts.to(probs.dtype) / (N * k)
        self.aux = E * (self.load * probs.mean(dim=0)).sum()
        self.z = torch.logsumexp(logits, dim=-1).square().mean()
        return self.dropout(out.view(*shape[:-1], -1))
