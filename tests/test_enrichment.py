"""The enrichment statistics of ``analyze`` against straightforward references: the exact p-value
by enumerating every K-subset, the Monte Carlo p converging to it, BH by its definition."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from symbreak.analysis import enrichment as enr


@pytest.mark.parametrize(("n", "n_c", "k"), [(10, 3, 4), (9, 5, 5), (8, 1, 3), (7, 7, 2)])
def test_exact_p_is_the_fraction_of_k_subsets_with_at_least_a_members(n, n_c, k):
    members = set(range(n_c))
    subsets = list(itertools.combinations(range(n), k))
    counts = [len(members.intersection(s)) for s in subsets]
    observed = torch.arange(k + 1)[:, None]  # every possible count, one class
    p = enr.exact_pvalues(observed, torch.tensor([n_c]), n, k)[:, 0]
    for a in range(k + 1):
        brute = sum(c >= a for c in counts) / len(subsets)
        assert p[a].item() == pytest.approx(brute, rel=1e-12, abs=1e-15), a


def test_exact_p_has_no_floor_where_the_monte_carlo_p_has_one():
    """50 of 50 in a class of 60 out of 4096: p = C(60,50)/C(4096,50), about 1e-105; the Monte
    Carlo p cannot go below 1/(P+1)."""
    n, n_c, k = 4096, 60, 50
    p = enr.exact_pvalues(torch.tensor([[k]]), torch.tensor([n_c]), n, k).item()
    log_expected = (
        math.lgamma(n_c + 1) - math.lgamma(k + 1) - math.lgamma(n_c - k + 1)
        - (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1))
    )  # fmt: skip
    assert math.log(p) == pytest.approx(log_expected, rel=1e-9)
    member = torch.zeros(1, n)
    member[0, :n_c] = 1
    top, _ = enr.permutation_null(member, k, 999, torch.Generator().manual_seed(0))
    assert enr.permutation_pvalues(torch.tensor([[float(k)]]), top).item() == 1 / 1000


def test_monte_carlo_p_estimates_the_exact_p():
    n, n_c, k = 200, 20, 15
    member = torch.zeros(1, n)
    member[0, :n_c] = 1
    top, bottom = enr.permutation_null(member, k, 20_000, torch.Generator().manual_seed(1))
    for a in (1, 2, 3, 4):
        exact = enr.exact_pvalues(torch.tensor([[a]]), torch.tensor([n_c]), n, k).item()
        for null in (top, bottom):
            mc = enr.permutation_pvalues(torch.tensor([[float(a)]]), null).item()
            assert mc == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000))


def test_bh_qvalues_follow_the_definition():
    p = torch.tensor([0.01, 0.04, 0.03, 0.5, 0.001], dtype=torch.float64)
    m = len(p)
    ranked = sorted(p.tolist())
    ref = {pv: min(1.0, min(m * ranked[j] / (j + 1) for j in range(i, m)))
           for i, pv in enumerate(ranked)}  # fmt: skip
    q = enr.bh_qvalues(p)
    assert q.tolist() == pytest.approx([ref[v] for v in p.tolist()], rel=1e-12)
