"""Multi-head self-attention with the symmetry-breaking and positional switches (one class).

Per head h, with ``d = d_head``::

    q, k, v = x W_Q + c_Q, x W_K + c_K, x W_V + c_V      (c_*: the learned qkv bias of GPT-2)
    q <- q + bQ,   k <- k + bK,   v <- v + bV             (unlearned; see bias.py)
    q <- R(i) q,   k <- R(j) k                            (model.pos_encoding=rope only)
    y   = softmax((q k^T) / sqrt(d) + A + M) v
    out = concat_h(y) W_O + c_O

``M`` is the mask (``model.mask``: causal, -inf for j > i; or bidirectional, 0) and ``A`` the
ALiBi bias ``-m_h |i - j|`` (``model.pos_encoding=alibi`` only; see positional.py).

Why each bias does what it does:

* ``(q + bQ).k = q.k + bQ.k``: a query-independent logit bonus ``bQ.k_t / sqrt(d)`` for key t,
  which breaks the O(d) rotation symmetry of the Q-K sector.
* ``q.(k + bK) = q.k + q.bK``: the same for every key of one query, so it cancels in the
  softmax. bK has *no* effect (kept for the ablation; a test shows the logits are identical).
* Softmax rows sum to one, so ``softmax(.)(v + bV) = softmax(.) v + bV``: bV shifts each head's
  output, breaking the V-O rotation symmetry.

The biases are added to q and v *before* ``scaled_dot_product_attention``, so the fused kernel
(flash / memory-efficient on GPU, flash on CPU) runs unchanged: symmetry breaking is free.

**bQ and RoPE.** bQ (and bK) are added *before* the rotation, so the rotation acts on
``q + bQ``: ``(R(i)(q + bQ)).(R(j) k) = (q + bQ).R(j - i) k``. Two reasons. (1) Scores keep
RoPE's defining property of depending on positions only through ``i - j``; a bias added after
the rotation would contribute ``bQ.R(j) k``, a term that depends on the *absolute* key
position j - it would smuggle absolute position into a model meant to have only relative
position, which is exactly what the positional study must not confound. (2) Before the
rotation the mean bias is an ordinary q bias of the projection (``c_Q + <bQ>``), so a trained
model still folds into a standard RoPE transformer with qkv biases (the Qwen2 layout). The
symmetry is still broken: the rotations that commute with every ``R(i)`` (a 2-D rotation per
frequency pair) move ``bQ`` unless it is zero. One consequence for the bK ablation: rotated with
its position, bK no longer cancels, since ``q.R(j - i) bK`` now varies with the key position j
(it is an ordinary k bias of a RoPE model); without RoPE it cancels exactly, as above.

Causal masks and bidirectional attention, with or without RoPE, keep the fused kernel
(``is_causal`` or no mask). ALiBi needs an explicit additive ``(n_head, T, T)`` bias, which
rules out the flash kernel: SDPA then falls back to a slower path (measured in
docs/performance.md).

Under bf16 autocast on a CPU, heads with ``T * d_head < CPU_BF16_ATTENTION_MIN_TD`` run the
attention kernel in fp32 (q, k, v upcast, the output cast back): torch's bf16 flash backward
on CPU is slower than its fp32 one for short sequences and narrow heads (4x at T=64 and d=32,
2.4x at T=128, ~1.05x at T*d = 16384); from T*d = 32768 bf16 wins (docs/performance.md,
"Attention in fp32 for short bf16 sequences on CPU").
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from symbreak.config import ModelConfig, SBConfig
from symbreak.model.bias import BiasSampler
from symbreak.model.positional import alibi_bias, alibi_slopes, apply_rope, rope_angles

CPU_BF16_ATTENTION_MIN_TD = 32768


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, sb: SBConfig, layer: int) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.d_head = cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # W_Q, W_K, W_V
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # W_O
        self.dropout = cfg.dropout
        self.causal = cfg.mask == "causal"
        self.pos_encoding = cfg.pos_encoding
        # Derived from the config, so non-persistent: checkpoints do not change.
        if cfg.pos_encoding == "rope":
            cos, sin = rope_angles(cfg.block_size, self.d_head, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.pos_encoding == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(cfg.n_head), persistent=False)

        def sampler(
            kind: str, mean: float, std: float | list[float], components: int = 1
        ) -> BiasSampler:
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
                components=components,
                unit=sb.component_unit,
            )

        self.bias_q = sampler("q", sb.q_mean, sb.q_std, sb.q_components) if sb.q else None
        self.bias_k = sampler("k", sb.k_mean, sb.k_std) if sb.k else None
        self.bias_v = sampler("v", sb.v_mean, sb.v_std, sb.v_components) if sb.v else None
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
        if self.pos_encoding == "rope":  # after bQ/bK: see the module docstring
            q = apply_rope(q, self.rope_cos, self.rope_sin)
            k = apply_rope(k, self.rope_cos, self.rope_sin)
        mask, causal = None, self.causal
        if self.pos_encoding == "alibi":  # the bias carries the causal mask
            mask, causal = alibi_bias(self.alibi_slopes, T, self.causal, q.dtype), False
        y = _attention(q, k, v, mask, causal, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


# The name from when attention was always causal, kept for existing callers (state-dict keys
# never contain class names, so checkpoints load either way).
CausalSelfAttention = SelfAttention


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout_p: float,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` by the fused kernel; in fp32 for short bf16
    sequences on CPU (module docstring)."""
    dtype = q.dtype
    short = q.shape[-2] * q.shape[-1] < CPU_BF16_ATTENTION_MIN_TD
    upcast = q.device.type == "cpu" and dtype == torch.bfloat16 and short
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
        mask = None if mask is None else mask.float()
    with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p
        )
    return y.to(dtype)


def _add_bias(t: torch.Tensor, sampler: BiasSampler | None) -> torch.Tensor:
    if sampler is None:
        return t
    b = sampler(t.shape[0])
    return t if b is None else t + b.to(t.dtype)
