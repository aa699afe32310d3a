"""Statistics, in one place: intervals for rates and means, the bootstrap, paired tests.

Rates (``eval``'s accuracies, ``exact_match``): Wilson's score interval, which stays inside
[0, 1] and is sensible at 0% and 100%. Means of per-item scores: a seeded percentile bootstrap
(1000 resamples), keyed so the same scores always give the same interval.

Over seeds (``symbreak report``), all from scipy.stats:

* A cell's figure over seeds: mean, sample standard deviation (ddof 1) and the 95% confidence
  interval of the mean from Student's t with n - 1 degrees of freedom
  (``scipy.stats.ttest_1samp(x, 0).confidence_interval(0.95)``: mean +- t_{0.975, n-1} s/sqrt(n)).
  With n = 1 there is no spread and no interval.
* A variant against the baseline, **paired by seed** (same initial weights and data order, so
  the seed's own luck cancels): d_i = variant_i - baseline_i; mean difference, its 95% CI and
  the two-sided paired t-test (``scipy.stats.ttest_rel``). Welch's unequal-variance t-test
  (``ttest_ind(equal_var=False)``) is the unpaired alternative, reported beside it.
  A difference is marked significant when its paired CI excludes zero. With fewer than 3 pairs
  the report says that nothing can be concluded, whatever the p-value.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from symbreak.seeding import keyed_seed

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_RESAMPLES = 1000
MIN_INTERVAL_ITEMS = 5  # fewer items: no bootstrap interval, "too few items"


# --------------------------------------------------------------------------------------------
# Intervals for rates and means of items
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean with a 95% interval over ``n`` items."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def has_interval(self) -> bool:
        """False when there were too few items for one (``lo``/``hi`` are NaN)."""
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def excludes_zero(self) -> bool:
        return self.has_interval and (self.lo > 0 or self.hi < 0)

    def to_json(self) -> dict[str, float | int]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (no continuity correction).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% and 100%.
    ``n`` may be an effective sample size (not a whole number), see :func:`summarize`.
    """
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, center - half)  # exact ends, not 1e-17 off
    hi = 1.0 if successes >= n else min(1.0, center + half)
    return (lo, hi)


def bootstrap_rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(keyed_seed("symbreak-bootstrap", *key))


def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``resamples`` resamples with replacement of ``values`` (shape (resamples,))."""
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[idx].mean(axis=1)


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return float(lo), float(hi)


def bootstrap_interval(draws: np.ndarray, n: int) -> tuple[float, float]:
    """:func:`percentile_interval` of bootstrap ``draws`` of a mean over ``n`` items, or (nan,
    nan) for fewer than :data:`MIN_INTERVAL_ITEMS`: resampling one item gives a point, three
    hardly more, and a point is no interval (it would even "exclude zero")."""
    if n < MIN_INTERVAL_ITEMS:
        return (math.nan, math.nan)
    return percentile_interval(draws)


def bootstrap_ci(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values``, seeded."""
    x = np.asarray(values, dtype=np.float64)
    return percentile_interval(bootstrap_means(x, resamples, bootstrap_rng(seed, "ci")))


# --------------------------------------------------------------------------------------------
# Over seeds: t intervals and paired tests
# --------------------------------------------------------------------------------------------

CONFIDENCE = 0.95
MIN_PAIRS = 3
CELL_METHOD = "mean over seeds; sd with ddof=1; 95% CI of the mean from Student t, n-1 df"
DIFF_METHOD = (
    "variant - baseline, paired by seed; 95% CI and p from the paired t-test (n-1 df); "
    "Welch's unequal-variance t-test as the unpaired alternative; corrected for the m "
    "differences of a metric in the report: Holm-adjusted p and the Bonferroni CI at "
    "1 - 0.05/m, and '*' only where that corrected CI excludes 0"
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Nearly identical samples (step 0, before variants diverge; equal token counts) trigger
    scipy's precision-loss warning; the numbers are still the exact t formulas'."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def describe(values: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    out: dict[str, Any] = {"n": n, "mean": float(x.mean()) if n else math.nan}
    if n >= 2:
        with _quiet():
            ci = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
        out.update(sd=float(x.std(ddof=1)), ci_lo=float(ci.low), ci_hi=float(ci.high))
    else:
        out.update(sd=math.nan, ci_lo=math.nan, ci_hi=math.nan)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (familywise error control): the
    i-th smallest of m becomes ``max_{j<=i} min(1, (m - j + 1) p_(j))``. NaN p-values (no
    test) stay NaN and are not counted in m. Written here because scipy has no Holm and
    statsmodels is too heavy a dependency for ten lines."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m = len(finite)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired(
    variant: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Paired comparison of two equally long, seed-aligned samples (variant - baseline), with
    a ``confidence`` t interval of the mean difference."""
    a = np.asarray(variant, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    n = int(a.size)
    d = a - b
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": float(d.mean()) if n else math.nan,
        "sd_diff": float(d.std(ddof=1)) if n >= 2 else math.nan,
        "ci_lo": math.nan,
        "ci_hi": math.nan,
        "t": math.nan,
        "p_paired": math.nan,
        "p_welch": math.nan,
        "significant": False,
        "conclusive": n >= MIN_PAIRS,
    }
    if n >= 2:
        if np.all(d == d[0]):  # no spread: t is undefined (scipy returns nan); say so honestly
            return out
        with _quiet():
            res = stats.ttest_rel(a, b)
            ci = res.confidence_interval(confidence)
            welch = stats.ttest_ind(a, b, equal_var=False)
        out.update(
            t=float(res.statistic),
            p_paired=float(res.pvalue),
            ci_lo=float(ci.low),
            ci_hi=float(ci.high),
            p_welch=float(welch.pvalue),
        )
        out["significant"] = bool(out["ci_lo"] > 0 or out["ci_hi"] < 0)
    return out


def paired_curve(
    steps_a: list[list[int]],
    loss_a: list[list[float]],
    steps_b: list[list[int]],
    loss_b: list[list[float]],
) -> dict[str, list[float]]:
    """Per evaluation step present in every run of both sides: the paired mean difference and
    its 95% t interval (NaN with fewer than 2 pairs)."""
    common = set(steps_a[0])
    for s in steps_a[1:] + steps_b:
        common &= set(s)
    steps = sorted(common)
    mean, lo, hi = [], [], []
    for step in steps:
        a = [ls[st.index(step)] for st, ls in zip(steps_a, loss_a, strict=True)]
        b = [ls[st.index(step)] for st, ls in zip(steps_b, loss_b, strict=True)]
        r = paired(a, b)
        mean.append(r["mean_diff"])
        lo.append(r["ci_lo"])
        hi.append(r["ci_hi"])
    return {"steps": steps, "mean": mean, "ci_lo": lo, "ci_hi": hi}


# --------------------------------------------------------------------------------------------
# Two models on the same items: paired verdicts
# --------------------------------------------------------------------------------------------


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test of two models' right/wrong verdicts on the same items: under the
    null both are equally often right, so of the ``n = b01 + b10`` discordant items (right for
    exactly one) the count right only for ``a`` is Binomial(n, 1/2); two-sided p from
    ``scipy.stats.binomtest``. No discordant item: p = 1."""
    x = np.asarray(a, dtype=bool)
    y = np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise ValueError("paired verdicts must have the same length")
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    n = only_a + only_b
    p = float(stats.binomtest(only_a, n, 0.5).pvalue) if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "discordant": n, "p": p}


def paired_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> Estimate:
    """``mean(a) - mean(b)`` over paired items with a percentile bootstrap 95% interval that
    resamples items (the same draw for both sides, so item difficulty cancels)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = int(d.size)
    draws = bootstrap_means(d, resamples, bootstrap_rng(seed, "paired")) if n else d
    lo, hi = bootstrap_interval(draws, n) if n else (math.nan, math.nan)
    return Estimate(float(d.mean()) if n else math.nan, lo, hi, n)
