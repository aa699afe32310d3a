"""The report's correction for multiple comparisons: Holm-adjusted p and Bonferroni intervals
over every difference of one metric, and '*' only where the corrected interval excludes 0."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from symbreak import stats
from symbreak.experiments.report import _correct_for_multiplicity


def test_holm_follows_its_definition():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    # sorted finite: 0.005, 0.01, 0.03, 0.04 (m = 4): 4*0.005, 3*0.01, 2*0.03, 1*0.04, running max
    expected = [0.03, 0.06, 0.06, 0.02, math.nan]
    got = stats.holm(p)
    assert got[:4] == pytest.approx(expected[:4], rel=1e-12) and math.isnan(got[4])
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1, never below the previous
    assert stats.holm([]) == []


def _cells(diff_by_variant: dict[str, list[float]]):
    base = [SimpleNamespace(seed=s, final_val_loss=2.0 + 0.01 * s) for s in range(3)]
    cells = {("all", "sym"): base}
    for v, deltas in diff_by_variant.items():
        cells[("all", v)] = [
            SimpleNamespace(seed=s, final_val_loss=2.0 + 0.01 * s + d) for s, d in enumerate(deltas)
        ]
    return cells


def test_a_difference_significant_alone_is_not_after_correction():
    cells = _cells({"a": [0.05, 0.07, 0.06], "b": [0.001, -0.002, 0.0015], "c": [0.0, 0.01, -0.01]})
    diffs = []
    for v in ("a", "b", "c"):
        a = [r.final_val_loss for r in cells[("all", v)]]
        b = [r.final_val_loss for r in cells[("all", "sym")]]
        diffs.append({"panel": "all", "variant": v, "metric": "val_loss", "seeds": [0, 1, 2],
                      **stats.paired(a, b)})  # fmt: skip
    _correct_for_multiplicity(diffs, cells, "sym")
    a = diffs[0]
    assert a["family_size"] == 3 and a["p_holm"] >= a["p_paired"]
    assert a["ci_lo_corrected"] < a["ci_lo"] and a["ci_hi_corrected"] > a["ci_hi"]
    assert a["significant_uncorrected"]
    assert a["significant"] == (a["ci_lo_corrected"] > 0)
    for d in diffs:
        assert d["p_holm"] >= d["p_paired"] or math.isnan(d["p_paired"])
