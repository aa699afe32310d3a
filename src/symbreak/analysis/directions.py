"""The probe direction ``<bQ>`` per layer and head, and random null directions of its norm.

``<bQ>`` is what evaluation adds to queries: :meth:`BiasSampler.expected` (the mean in batch
mode, the draw in fixed mode, the parameter in learned mode), one vector per layer shared by its
heads, or one per head with ``sb.per_head``. A run without bQ (the symmetric baseline) is probed
with the vector bQ would have had, ``sb.q_mean`` in every dimension, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symbreak.errors import SymbreakError
from symbreak.model import GPT
from symbreak.seeding import keyed_seed


@dataclass
class Direction:
    vectors: torch.Tensor  # (L, H, d_head) float64
    source: str  # where the vectors come from, in words (goes to analysis.json)

    @property
    def norms(self) -> torch.Tensor:
        return self.vectors.norm(dim=-1)


def probe_direction(model: GPT) -> Direction:
    """``<bQ>`` of every layer and head of ``model`` (or ``sb.q_mean`` when it has no bQ)."""
    n_layer, n_head = len(model.blocks), model.blocks[0].attn.n_head
    d = model.blocks[0].attn.d_head
    sb = model.sb
    if sb.q:
        rows = []
        for block in model.blocks:
            b = block.attn.bias_q.expected().detach().to("cpu", torch.float64)  # (1, n, 1, d)
            rows.append(b[0, :, 0, :].expand(n_head, d))
        vectors = torch.stack(rows)
        what = {"batch": "its mean", "fixed": "the fixed draw", "learned": "the learned vector"}
        source = f"<bQ> of the run (sb.mode={sb.mode}: {what[sb.mode]})"
    else:
        vectors = torch.full((n_layer, n_head, d), float(sb.q_mean), dtype=torch.float64)
        source = (
            f"the run has no bQ (sb.q=false): probed with the vector bQ would have had, "
            f"sb.q_mean={sb.q_mean:g} in every dimension"
        )
    if bool((vectors.norm(dim=-1) == 0).any()):
        raise SymbreakError(
            "the probe direction <bQ> is zero (sb.q_mean=0 and no learned/fixed vector); "
            "there is no direction to analyse"
        )
    return Direction(vectors.contiguous(), source)


def random_directions(norms: torch.Tensor, n: int, d: int, seed: int) -> torch.Tensor:
    """(L, H, n, d) float64 Gaussian directions, each rescaled to the norm of its head's <bQ>.

    Seeded by ``(seed, "null-directions")``; the same directions serve both scopes."""
    gen = torch.Generator().manual_seed(keyed_seed(seed, "null-directions"))
    z = torch.randn((*norms.shape, n, d), generator=gen, dtype=torch.float64)
    return z / z.norm(dim=-1, keepdim=True) * norms[..., None, None]
