"""Causal multi-head self-attention with the symmetry-breaking switches (one class, no variants).

Per head h, with ``d = d_head``::

    q, k, v = x W_Q + c_Q, x W_K + c_K, x W_V + c_V      (c_*: the learned qkv bias of GPT-2)
    q <- q + bQ,   k <- k + bK,   v <- v + bV             (unlearned; see bias.py)
    y   = softmax((q k^T) / sqrt(d) + causal mask) v
    out = concat_h(y) W_O + c_O

Why each bias does what it does:

* ``(q + bQ).k = q.k + bQ.k``: a query-independent logit bonus ``bQ.k_t / sqrt(d)`` for key t,
  which breaks the O(d) rotation symmetry of the Q-K sector.
* ``q.(k + bK) = q.k + q.bK``: the same for every key of one query, so it cancels in the
  softmax. bK has *no* effect (kept for the ablation; a test shows the logits are identical).
* Softmax rows sum to one, so ``softmax(.)(v + bV) = softmax(.) v + bV``: bV shifts each head's
  output, breaking the V-O rotation symmetry.

The biases are added to q and v *before* ``scaled_dot_product_attention``, so the fused kernel
(flash / memory-efficient on GPU, flash on CPU) runs unchanged: symmetry breaking is free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from symbreak.config import ModelConfig, SBConfig
from symbreak.model.bias import BiasSampler


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, sb: SBConfig, layer: int) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.d_head = cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # W_Q, W_K, W_V
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # W_O
        self.dropout = cfg.dropout
        self.causal = True

        def sampler(kind: str, mean: float, std: float | list[float]) -> BiasSampler:
            return BiasSampler(
                kind,
                layer,
                cfg.n_head,
                self.d_head,
                mean,
                std,
                mode=sb.mode,
                per_head=sb.per_head,
                eval_mode=sb.eval,
                seed=0 if sb.seed is None else sb.seed,
            )

        self.bias_q = sampler("q", sb.q_mean, sb.q_std) if sb.q else None
        self.bias_k = sampler("k", sb.k_mean, sb.k_std) if sb.k else None
        self.bias_v = sampler("v", sb.v_mean, sb.v_std) if sb.v else None
        # A seam, not maths: the per-head keys (B, n_head, T, d_head) exactly as the kernel gets
        # them (after c_K and bK) pass through this identity, so analysis can read them with a
        # forward hook instead of re-deriving attention elsewhere. No parameters, no cost.
        self.key = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, d_head)
        q = q.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.d_head).transpose(1, 2)
        q = _add_bias(q, self.bias_q)
        k = self.key(_add_bias(k, self.bias_k))
        v = _add_bias(v, self.bias_v)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


def _add_bias(t: torch.Tensor, sampler: BiasSampler | None) -> torch.Tensor:
    if sampler is None:
        return t
    b = sampler()
    return t if b is None else t + b.to(t.dtype)
