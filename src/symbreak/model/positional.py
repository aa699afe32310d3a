"""Position encodings and attention masks: the switches of the positional-symmetry study.

``model.pos_encoding`` chooses how (or whether) a token's position enters the model:

* ``learned`` - a trained table added to the token embedding: ``h_0 = wte[x_k] + wpe[k]``
  (GPT-2; lives in ``gpt.py`` as ``nn.Embedding``).
* ``sinusoidal`` - the fixed table of Vaswani et al. (2017), added the same way::

      PE[k, 2i]   = sin(k / 10000^(2i / C))
      PE[k, 2i+1] = cos(k / 10000^(2i / C))

* ``rope`` - rotary embeddings (Su et al. 2021), applied to q and k of every head after the
  projection. Dimension pairs ``(2i, 2i+1)`` of a vector at position m are rotated by
  ``m * theta_i`` with ``theta_i = base^(-2i / d_head)``: ``q_m -> R(m) q_m``. Since
  ``R(m)^T R(n) = R(n - m)``, the score ``(R(m) q).(R(n) k) = q.R(n - m) k`` depends on the
  positions only through ``m - n``. Needs an even d_head.
* ``alibi`` - attention with linear biases (Press et al. 2022): no encoding of the input; head
  h adds ``-m_h * |i - j|`` to the score of query i and key j (for the causal mask only
  ``j <= i`` remains, the original formulation). The slopes are geometric: for n heads, n a
  power of two, ``m_h = 2^(-8 h / n)``, h = 1..n; otherwise the n0 = 2^floor(log2 n) slopes of
  n0 heads followed by every other slope of 2 n0 heads (the reference implementation's rule).
* ``none`` - no position at all (NoPE). Without a causal mask the model is then equivariant
  under permutations of its input positions.

``model.mask``: ``causal`` (query i sees keys j <= i) or ``bidirectional`` (every key).
"""

from __future__ import annotations

import torch

from symbreak.config import MASKS as MASKS  # re-exported: model.mask's choices
from symbreak.config import POS_ENCODINGS as POS_ENCODINGS  # model.pos_encoding's choices


def sinusoidal_table(n_pos: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The (n_pos, dim) sinusoidal table above, in float64 (callers cast to their dtype).

    An odd ``dim`` keeps the sine of its last frequency and drops the cosine.
    """
    k = torch.arange(n_pos, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)
    angle = k / base ** (two_i / dim)  # (n_pos, ceil(dim / 2))
    table = torch.zeros(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table


def rope_angles(
    n_pos: int, d_head: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of ``m * theta_i``, each (n_pos, d_head / 2), float64 (small tables, so a
    float64 model is exact and others cast them per forward)."""
    if d_head % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {d_head}")
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angle = torch.arange(n_pos, dtype=torch.float64)[:, None] * theta
    return torch.cos(angle), torch.sin(angle)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x_2i, x_2i+1)`` of ``x`` (..., T, d) by the angles of positions 0..T-1.

    ``(a, b) -> (a cos - b sin, a sin + b cos)``, with ``cos``/``sin`` (>= T, d / 2).
    """
    T = x.shape[-2]
    c, s = cos[:T].to(x.dtype), sin[:T].to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """The ALiBi slope of each head (n_head,), float64 (see the module docstring)."""
    if n_head < 1:
        raise ValueError(f"ALiBi needs at least one head, got {n_head}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    n0 = 1 << (n_head.bit_length() - 1)  # the largest power of two <= n_head
    slopes = power_of_two(n0)
    if n0 < n_head:
        slopes += power_of_two(2 * n0)[0::2][: n_head - n0]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(slopes: torch.Tensor, T: int, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """The additive score bias (n_head, T, T): ``-m_h |i - j|``, and ``-inf`` above the diagonal
    when ``causal`` (so it carries the mask too and SDPA runs with ``is_causal=False``)."""
    work = torch.promote_types(dtype, torch.float32)  # float64 only for float64 models
    pos = torch.arange(T, device=slopes.device)
    dist = (pos[:, None] - pos[None, :]).abs().to(work)
    bias = -slopes.to(work)[:, None, None] * dist
    if causal:
        bias = bias.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
    return bias.to(dtype)
