"""Class enrichment at the ends of a score ranking, with permutation p-values and BH q-values.

For one head, a population of N tokens with scores s (the bonus ``<bQ>.k_t / sqrt(d)``), and a
class c with n_c members among them, the *amplified* end is the K highest scores and the
*suppressed* end the K lowest. With a_c members of c in an end::

    log2_enrichment = log2( (a_c / K) / (n_c / N) )       (null when a_c = 0: -infinity)

p-value: one-sided, "c is over-represented in this end". Shuffling the scores across tokens
makes each end a uniformly random K-subset of the population, whatever the head, so the number
of class members in it is exactly hypergeometric: the exact permutation p-value is the tail

    p = P(X >= a_c),  X ~ Hypergeom(N, n_c, K)        (Fisher's exact test; ``p_value``)

with no simulation and no floor. The q-values (Benjamini-Hochberg over every (head, class, end)
of a scope) use it. Seeded Monte Carlo permutations estimate the same p as a cross-check
(``p_permutation``; one set serves every head of a scope):

    p_mc = (1 + #{permutations with a_c* >= a_c}) / (1 + P)

Its floor 1/(P+1) is why it is not used for q: with about a hundred tests per scope, BH would
lift even a perfect signal's q to about 100/(P+1).
"""

from __future__ import annotations

import math

import torch

PERMUTATION_CHUNK = 256  # permutations drawn per batch; fixed, so results do not depend on RAM


def membership(members: dict[str, list[int]], population: torch.Tensor) -> torch.Tensor:
    """(C, N) float 0/1 matrix: is population[j] a member of class i (in ``members`` order)."""
    lookup_size = int(population.max()) + 1 if population.numel() else 1
    rows = []
    for ids in members.values():
        mask = torch.zeros(lookup_size, dtype=torch.bool)
        ids_t = torch.tensor([i for i in ids if i < lookup_size], dtype=torch.long)
        mask[ids_t] = True
        rows.append(mask[population])
    return torch.stack(rows).to(torch.float32)


def end_indices(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rows, K) of the K highest and the K lowest scores of each row, extreme first.

    Ties are broken by lower index (a stable sort), so the ends are deterministic."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    top = order[..., :k]
    asc = torch.sort(scores, dim=-1, stable=True).indices
    return top, asc[..., :k]


def end_counts(member: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Class members in each end: ``member`` (C, N), ``idx`` (..., K) -> (..., C)."""
    return member[:, idx].sum(-1).movedim(0, -1)


def permutation_null(
    member: torch.Tensor, k: int, permutations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class counts (C, P) in the top and bottom K of P seeded random shuffles of the scores.

    A shuffle assigns the scores to tokens uniformly at random; its top-K (bottom-K) are the
    tokens that drew the K largest (smallest) of P iid uniform keys."""
    n = member.shape[1]
    tops, bottoms = [], []
    done = 0
    while done < permutations:
        m = min(PERMUTATION_CHUNK, permutations - done)
        u = torch.rand(m, n, generator=generator)
        tops.append(end_counts(member, u.topk(k, dim=1).indices).T)
        bottoms.append(end_counts(member, u.topk(k, dim=1, largest=False).indices).T)
        done += m
    return torch.cat(tops, 1), torch.cat(bottoms, 1)


def permutation_pvalues(observed: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """``(1 + #{null >= observed}) / (1 + P)``: ``observed`` (H, C), ``null`` (C, P) -> (H, C)."""
    p = null.shape[1]
    srt = torch.sort(null, dim=1).values
    below = torch.searchsorted(srt.contiguous(), observed.T.contiguous(), right=False)  # < obs
    return ((1 + p - below).T.to(torch.float64)) / (1 + p)


def _log_choose(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def exact_pvalues(observed: torch.Tensor, n_class: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Hypergeometric upper tail ``P(X >= observed)``, X ~ Hypergeom(N=n, n_c, K=k), float64.

    ``observed`` (..., C), ``n_class`` (C,)."""
    j = torch.arange(k + 1, dtype=torch.float64)  # (K+1,)
    nc = n_class.to(torch.float64)[:, None]  # (C, 1)
    nn_ = torch.tensor(float(n), dtype=torch.float64)
    valid = (j <= nc) & (k - j <= nn_ - nc)
    # clamped arguments keep lgamma finite where the pmf is 0 anyway (masked next)
    logpmf = (
        _log_choose(nc, torch.minimum(j, nc))
        + _log_choose(nn_ - nc, torch.minimum((k - j).clamp(min=0), nn_ - nc))
        - _log_choose(nn_, torch.tensor(float(k), dtype=torch.float64))
    )
    logpmf = torch.where(valid, logpmf, torch.tensor(-math.inf, dtype=torch.float64))  # (C, K+1)
    tail = observed.to(torch.float64)[..., None] <= j  # (..., C, K+1)
    lp = torch.where(tail, logpmf.expand_as(tail), torch.tensor(-math.inf, dtype=torch.float64))
    return torch.logsumexp(lp, -1).exp().clamp(max=1.0)


def log2_enrichment(observed: torch.Tensor, n_class: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """``log2((a/K) / (n_c/N))`` (float64; -inf where a = 0, nan where n_c = 0)."""
    a = observed.to(torch.float64)
    return torch.log2((a / k) / (n_class.to(torch.float64) / n))


def bh_qvalues(p: torch.Tensor) -> torch.Tensor:
    """Benjamini-Hochberg q-values of a 1-D tensor of p-values: ``min_{j>=i} m p_(j) / j``."""
    m = p.numel()
    if m == 0:
        return p.clone()
    order = torch.argsort(p, stable=True)
    ranked = p[order] * m / torch.arange(1, m + 1, dtype=p.dtype)
    q_sorted = torch.flip(torch.cummin(torch.flip(ranked, [0]), 0).values, [0]).clamp(max=1.0)
    q = torch.empty_like(p)
    q[order] = q_sorted
    return q


def percentile(observed: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """Percentile of ``observed`` (...) in ``null`` (..., R): 100 (#below + #equal / 2) / R."""
    obs = observed[..., None]
    below = (null < obs).sum(-1).to(torch.float64)
    equal = (null == obs).sum(-1).to(torch.float64)
    return 100.0 * (below + 0.5 * equal) / null.shape[-1]
