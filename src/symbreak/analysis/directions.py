"""The probe direction ``<bQ>`` per layer and head, and random null directions of its norm.

``<bQ>`` is what evaluation adds to queries: :meth:`BiasSampler.expected` (the mean in batch
mode, the draw in fixed mode, the parameter in learned mode), one vector per layer shared by its
heads, or one per head with ``sb.per_head``. A run without bQ (the symmetric baseline) is probed
with the vector bQ would have had, ``sb.q_mean`` in every dimension, and says so. The zero-mean
control (bQ drawn around 0) has no mean direction: it is probed with the one a non-zero mean
would have had, ``sb.q_mean``'s default (0.5) in every dimension, and says so. A run with
several bQ components (``sb.q_components = K``) is probed along each component's mean and
along their average (what ``sb.eval=mean`` adds): K + 1 directions, labelled ``component``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symbreak.config import SBConfig
from symbreak.errors import SymbreakError
from symbreak.model import GPT
from symbreak.seeding import keyed_seed


@dataclass
class Direction:
    vectors: torch.Tensor  # (L, H, d_head) float64
    source: str  # where the vectors come from, in words (goes to analysis.json)
    component: int | str | None = None  # K > 1: the component's index, or "mean"
    zero_mean: bool = False  # the run's bQ has mean 0: probed with a stand-in direction

    @property
    def norms(self) -> torch.Tensor:
        return self.vectors.norm(dim=-1)


def _rows(vectors: list[torch.Tensor], n_head: int, d: int) -> torch.Tensor:
    """Per-layer (1, n, 1, d) vectors -> (L, H, d) float64."""
    return torch.stack(
        [b.detach().to("cpu", torch.float64)[0, :, 0, :].expand(n_head, d) for b in vectors]
    ).contiguous()


def probe_directions(model: GPT) -> list[Direction]:
    """Every direction to probe: ``[probe_direction(model)]``, or with K > 1 bQ components each
    component's mean (``component`` 0..K-1) and then their average (``component`` "mean")."""
    samplers = [block.attn.bias_q for block in model.blocks]
    k = samplers[0].n_components if model.sb.q and samplers[0] is not None else 1
    if k == 1:
        return [probe_direction(model)]
    n_head, d = model.blocks[0].attn.n_head, model.blocks[0].attn.d_head
    out = [
        Direction(
            _rows([s.all_means()[c : c + 1] for s in samplers], n_head, d),
            f"mean of bQ component {c} of {k} (sb.q_components={k})",
            component=c,
        )
        for c in range(k)
    ]
    avg = probe_direction(model)
    avg.source += f": the average of the {k} component means"
    avg.component = "mean"
    return [*out, avg]


def probe_direction(model: GPT) -> Direction:
    """``<bQ>`` of every layer and head of ``model`` (or ``sb.q_mean`` when it has no bQ; the
    default ``sb.q_mean`` when its bQ has mean 0)."""
    n_layer, n_head = len(model.blocks), model.blocks[0].attn.n_head
    d = model.blocks[0].attn.d_head
    sb = model.sb
    if sb.q and sb.mode == "batch" and sb.q_mean == 0:
        stand_in = float(SBConfig.q_mean)
        vectors = torch.full((n_layer, n_head, d), stand_in, dtype=torch.float64)
        source = (
            f"the run's bQ is drawn around 0 (the zero-mean control, sb.q_mean=0): probed with "
            f"the direction a non-zero mean would have had, {stand_in:g} (sb.q_mean's default) "
            f"in every dimension"
        )
        return Direction(vectors, source, zero_mean=True)
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
