"""Scoring: known logits give known scores; batching, padding and truncation change nothing;
the statistics match published values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from symbreak.config import ModelConfig, SBConfig
from symbreak.data import EOT_ID, GPT2_VOCAB_SIZE, encode
from symbreak.errors import DataError
from symbreak.eval.puzzles import Item, builtin_suite
from symbreak.eval.scoring import ItemResult, paired_differences, score_items, summarize
from symbreak.model import GPT
from symbreak.stats import bootstrap_ci, wilson_interval

PADDED_VOCAB = 50304


class Bigram(nn.Module):
    """Next-token logits depend only on the current token: ``prefs[current][next]``, else 0."""

    def __init__(self, prefs: dict[int, dict[int, float]], block_size: int = 64) -> None:
        super().__init__()
        self.prefs = prefs
        self.block_size = block_size
        self.widths: list[int] = []

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        self.widths.append(idx.shape[1])
        out = torch.zeros(*idx.shape, PADDED_VOCAB)
        for (b, t), cur in np.ndenumerate(idx.numpy()):
            for tok, value in self.prefs.get(int(cur), {}).items():
                out[b, t, tok] = value
        return out, None


def hand_logp(prefs: dict[int, dict[int, float]], cur: int, tok: int) -> float:
    """log p(tok | cur) over the 50257 real tokens (padding ids take no mass)."""
    bumps = {k: v for k, v in prefs.get(cur, {}).items() if k < GPT2_VOCAB_SIZE}
    z = (GPT2_VOCAB_SIZE - len(bumps)) + sum(math.exp(v) for v in bumps.values())
    return bumps.get(tok, 0.0) - math.log(z)


def one(text: str) -> int:
    ids = encode(text)
    assert len(ids) == 1
    return ids[0]


H, W, P = one("Hello"), one(" world"), one(" peace")
PREFS = {H: {W: 2.0, 11: 3.0, 50300: 100.0}, W: {P: 5.0}}


def test_known_logits_give_known_scores():
    items = [
        Item("c", "Hello", " world"),
        Item("c", "Hello", " world peace"),
        Item("c", "Hello", " peace"),
        Item("d", "Hello world", compare="world Hello"),
    ]
    res = score_items(Bigram(PREFS), items, batch_size=3, block_size=64).results
    lp_w = hand_logp(PREFS, H, W)
    # " world": only id 11 (logit 3) beats it; the padding id 50300 (logit 100) is masked
    m = res[0].metrics
    assert (m["rank"], m["top1"], m["top5"]) == (2, 0.0, 1.0)
    assert m["first_ce"] == pytest.approx(-lp_w, rel=1e-5)
    assert m["answer_ce"] == pytest.approx(-lp_w, rel=1e-5)
    assert [i for i, _ in res[0].top5[:2]] == [11, W]
    assert res[0].top5[0][1] == pytest.approx(math.exp(hand_logp(PREFS, H, 11)), rel=1e-4)
    assert all(i < GPT2_VOCAB_SIZE for i, _ in res[0].top5)
    # " world peace": teacher forcing over both tokens
    m = res[1].metrics
    assert m["first_ce"] == pytest.approx(-lp_w, rel=1e-5)
    assert m["answer_ce"] == pytest.approx(-(lp_w + hand_logp(PREFS, W, P)) / 2, rel=1e-5)
    assert res[1].tokens == 2
    # " peace" has logit 0 like almost everything: ties are broken by id, as argmax does
    assert res[2].metrics["rank"] == 1 + 2 + (P - 2)  # 11 and W beat it; ids below P tie
    # comparison: each text is scored after an end-of-text token
    ce_good = -(hand_logp(PREFS, EOT_ID, H) + lp_w) / 2
    ce_bad = math.log(GPT2_VOCAB_SIZE)  # no preferences: uniform over real tokens
    m = res[3].metrics
    assert m["ce_prompt"] == pytest.approx(ce_good, rel=1e-5)
    assert m["ce_compare"] == pytest.approx(ce_bad, rel=1e-5)
    assert m["ppl_ratio"] == pytest.approx(math.exp(ce_bad - ce_good), rel=1e-4)
    assert m["preferred"] == m["acc"] == 1.0


def test_a_constant_model_gets_no_free_top1():
    res = score_items(Bigram({}), [Item("c", "Hello", " world")], block_size=64).results[0]
    assert res.metrics["rank"] == W + 1 and res.metrics["top1"] == 0.0


def test_long_prompts_are_cut_on_the_left():
    prompt = "a b c d e f g"
    n_ctx = len(encode(prompt))
    items = [Item("c", prompt, " world peace"), Item("d", prompt, compare="g f e d c b a")]
    stub = Bigram(PREFS, block_size=4)
    short = score_items(stub, items, block_size=4).results
    assert max(stub.widths) <= 4
    full = score_items(Bigram(PREFS), items, block_size=64).results
    assert short[0].truncated == n_ctx + 2 - 1 - 4
    assert short[0].metrics == pytest.approx(full[0].metrics)  # a bigram needs no context
    assert short[1].truncated == n_ctx - 4 and short[1].tokens == 8
    with pytest.raises(DataError, match="does not fit"):
        score_items(Bigram({}), [Item("c", "x", " one two three four")], block_size=3)


def tiny_gpt(seed: int = 0, block_size: int = 32) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=block_size, vocab_size=50304)
    return GPT(cfg, SBConfig(q=True, v=True, seed=seed))


class Wrapped(nn.Module):
    """Hides the GPT type: scoring falls back to the model's full logits."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt, self.cfg = gpt, gpt.cfg

    def forward(self, idx: torch.Tensor):
        return self.gpt(idx)


@pytest.fixture(scope="module")
def mixed_items() -> list[Item]:
    suite = builtin_suite(seed=3, per_category=3)  # lengths 5..70 tokens, some over 32
    return [*suite, Item("x", "Hello", " world peace and quiet")]


def assert_same(a: list[ItemResult], b: list[ItemResult]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.item == y.item
        assert x.truncated == y.truncated
        for k in x.metrics:
            if k == "rank":
                assert x.metrics[k] == y.metrics[k], (x.item, k)
            else:
                assert x.metrics[k] == pytest.approx(y.metrics[k], rel=1e-4, abs=1e-5), k
        assert [i for i, _ in x.top5[:3]] == [i for i, _ in y.top5[:3]]


def test_batched_scoring_equals_one_by_one(mixed_items):
    model = tiny_gpt()
    alone = score_items(model, mixed_items, batch_size=1)
    assert alone.truncated_items > 0
    for batch_size in (4, 64):
        assert_same(score_items(model, mixed_items, batch_size=batch_size).results, alone.results)


def test_output_layer_shortcut_matches_full_logits(mixed_items):
    model = tiny_gpt()
    fast = score_items(model, mixed_items, batch_size=8).results
    slow = score_items(Wrapped(model), mixed_items, batch_size=8).results
    assert_same(fast, slow)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score, no correction)
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=5e-5)


def test_bootstrap_is_seeded_and_sane():
    x = np.random.default_rng(0).normal(3.0, 1.0, size=200)
    a, b = bootstrap_ci(x), bootstrap_ci(x)
    assert a == b
    assert a[0] < x.mean() < a[1]
    assert a[1] - a[0] == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.2)
    assert bootstrap_ci([2.0] * 10) == (2.0, 2.0)


def completion(cat: str, top1: float, ce: float = 1.0) -> ItemResult:
    metrics = {"acc": top1, "top1": top1, "top5": 1.0, "rank": 3.0, "first_ce": ce, "answer_ce": ce}
    return ItemResult(Item(cat, f"p{cat}{top1}{ce}", " x"), metrics)


def test_macro_and_micro_averages():
    results = [completion("a", t) for t in (1, 1, 1, 0)] + [completion("b", 0), completion("b", 0)]
    s = summarize(results)
    assert s.categories["a"].metrics["top1"].mean == 0.75 and s.categories["a"].n == 4
    assert s.categories["a"].metrics["top1"].lo == pytest.approx(wilson_interval(3, 4)[0])
    top1 = s.overall["top1"]
    assert top1["macro"].mean == pytest.approx(0.375)
    assert top1["micro"].mean == pytest.approx(0.5)
    assert (top1["micro"].lo, top1["micro"].hi) == pytest.approx(wilson_interval(3, 6))
    n_eff = 2**2 / (1 / 4 + 1 / 2)  # Kish: the macro average weighs items unequally
    assert (top1["macro"].lo, top1["macro"].hi) == pytest.approx(
        wilson_interval(0.375 * n_eff, n_eff)
    )
    assert s.overall["rank"]["macro"].mean == 3.0
    assert "preferred" not in s.overall  # no comparison categories


def test_paired_differences():
    base = [completion("a", t) for t in (0, 0, 1, 0) * 2] + [completion("b", 1, ce=2.0)] * 3
    better = [ItemResult(r.item, {**r.metrics, "top1": 1.0, "acc": 1.0}) for r in base]
    same = paired_differences(base, base)
    assert same.categories["a"]["top1"].mean == 0.0
    assert not same.categories["a"]["top1"].excludes_zero()
    d = paired_differences(base, better)
    assert d.categories["a"]["top1"].mean == 0.75
    assert d.categories["a"]["top1"].excludes_zero()
    assert d.categories["b"]["top1"].mean == 0.0
    assert not d.categories["b"]["top1"].has_interval  # three items: too few for one
    assert d.overall["top1"]["micro"].mean == pytest.approx(6 / 11)
    with pytest.raises(ValueError, match="same items"):
        paired_differences(base, base[::-1])


def test_too_few_items_give_no_bootstrap_interval_and_no_star():
    """One or three items: resampling gives a point, which is no interval; the report says
    "too few items" and never marks the difference."""
    from symbreak.eval.report import format_difference, format_estimate
    from symbreak.eval.scoring import METRICS
    from symbreak.stats import MIN_INTERVAL_ITEMS, Estimate, bootstrap_interval

    draws = np.full(1000, 5892.0)
    assert all(math.isnan(v) for v in bootstrap_interval(draws, 1))
    assert all(math.isnan(v) for v in bootstrap_interval(draws, MIN_INTERVAL_ITEMS - 1))
    assert bootstrap_interval(draws, MIN_INTERVAL_ITEMS) == (5892.0, 5892.0)
    point = Estimate(3.0, math.nan, math.nan, 3)
    assert not point.has_interval and not point.excludes_zero()
    assert format_estimate(point, METRICS["rank"]).endswith("(too few items)")
    assert format_difference(point, METRICS["rank"]).endswith("(too few items)")
    assert "*" not in format_difference(point, METRICS["rank"])
