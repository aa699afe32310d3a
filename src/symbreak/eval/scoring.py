"""Batched scoring of puzzle items, and the statistics over the scores.

Scoring
-------
Completion item (``prompt`` + ``expected``): the input is ``encode(prompt) + encode(expected)``
without its last token; the logits at the last prompt position predict the answer's first
token, the following ones the rest (teacher forcing). Per item:

* ``top1`` / ``top5`` - the expected first token is ranked 1 / within 5;
* ``rank`` - its full rank over the vocabulary (1 = best). Ties are broken by token id, as
  ``argmax`` does, so ``top1`` is exactly "argmax == expected" and a constant output never
  scores 100%;
* ``first_ce`` - cross-entropy of the first answer token (nats);
* ``answer_ce`` - mean cross-entropy per answer token, teacher-forced over all of them.

Comparison item (``prompt`` well-formed, ``compare`` the other): each text is scored after an
end-of-text token (GPT-2's document separator), so its first token is scored too. Per item:
``ce_prompt``, ``ce_compare`` (mean per token), ``ppl_ratio`` = ppl(compare) / ppl(prompt) and
``preferred`` = ``ce_prompt < ce_compare`` (a tie is not a preference).

Every item also gets ``acc`` (``top1`` or ``preferred``): the headline accuracy, averaged over
all categories in the overall figures.

Vocabulary: the model's vocabulary is GPT-2's 50257 tokens padded to 50304. The padding ids
are never real tokens, so their logits are set to -inf before anything is computed: they take
no probability mass, no rank and are never predicted.

Batching: sequences are sorted by length, right-padded, and run ``batch_size`` at a time.
Attention is causal and positions start at 0 in every row, so right padding never changes the
logits at an item's own positions (the tests check batch == one at a time). A sequence longer
than ``block_size`` keeps its last ``block_size`` tokens: the prompt is truncated on the left
and the number of dropped tokens is reported per item (``truncated``). An answer that does not
fit the context at all is an error.

Only the logits that are needed are computed: for a :class:`~symbreak.model.GPT` the trunk
(``GPT.hidden``) runs once and the output layer (``GPT.output``; ``GPT.forward`` is made of the
same two methods) only at the needed positions, instead of materialising (B, T, 50304) logits.
Other modules (test stubs) are scored from their full logits.

Statistics (the intervals themselves are :mod:`symbreak.stats`)
----------------------------------------------------------------
Per category: the mean of each metric with a 95% interval: Wilson's score interval for rates
(``acc``, ``top1``, ``top5``, ``preferred``), a seeded percentile bootstrap (1000 resamples)
for the others. Overall, per metric, over the categories that have it: ``macro`` (mean of the
category means) and ``micro`` (over all items); their intervals are Wilson's for rates (the
macro one at Kish's effective sample size) and a bootstrap stratified by category otherwise.
Differences between runs (:func:`paired_differences`) use a paired bootstrap over items, since
every run sees the same items. Bootstrap draws are seeded by (seed, category, metric), so the
same scores always give the same intervals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from symbreak.data import EOT_ID, GPT2_VOCAB_SIZE, encode
from symbreak.errors import DataError, SymbreakError
from symbreak.eval.puzzles import Item
from symbreak.model import GPT
from symbreak.stats import (
    BOOTSTRAP_RESAMPLES,
    Estimate,
    bootstrap_interval,
    bootstrap_means,
    bootstrap_rng,
    wilson_interval,
)

HEAD_CHUNK = 1024  # positions per output-layer matmul: bounds memory at ~200 MB of logits


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    rate: bool  # a 0/1 outcome: Wilson interval, shown in percent
    higher_is_better: bool
    kind: str  # "completion", "comparison" or "both"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("acc", "accuracy (Top-1 or preferred)", True, True, "both"),
        Metric("top1", "Top-1", True, True, "completion"),
        Metric("top5", "Top-5", True, True, "completion"),
        Metric("rank", "mean rank", False, False, "completion"),
        Metric("first_ce", "CE first token", False, False, "completion"),
        Metric("answer_ce", "CE answer/token", False, False, "completion"),
        Metric("preferred", "preferred", True, True, "comparison"),
        Metric("ce_prompt", "CE well-formed", False, False, "comparison"),
        Metric("ce_compare", "CE other", False, False, "comparison"),
        Metric("ppl_ratio", "ppl ratio", False, True, "comparison"),
    )
}


@dataclass
class ItemResult:
    """The scores of one item. ``top5`` holds (token id, probability) at the first answer
    position (empty for comparisons); ``truncated`` counts prompt tokens dropped to fit."""

    item: Item
    metrics: dict[str, float]
    top5: list[tuple[int, float]] = field(default_factory=list)
    tokens: int = 0  # answer tokens (completion) or tokens of both texts (comparison)
    truncated: int = 0


@dataclass
class ScoreRun:
    """All item results of one call, and how long scoring took."""

    results: list[ItemResult]
    seconds: float
    sequences: int
    tokens: int
    batch_size: int

    @property
    def truncated_items(self) -> int:
        return sum(r.truncated > 0 for r in self.results)


# --------------------------------------------------------------------------------------------
# Logits at selected positions
# --------------------------------------------------------------------------------------------


def mask_padding(logits: torch.Tensor) -> torch.Tensor:
    """Set the logits of ids >= 50257 (vocabulary padding, never real tokens) to -inf."""
    if logits.shape[-1] > GPT2_VOCAB_SIZE:
        logits[..., GPT2_VOCAB_SIZE:] = float("-inf")
    return logits


class BatchLogits:
    """Logits of one (B, T) batch at chosen (row, position) pairs, as float32 with the
    vocabulary padding masked. For a GPT, the output layer runs only at those positions (with
    ``sb.eval=mixture``, once per component: the logits are the mixture's log-probabilities)."""

    def __init__(self, model: nn.Module, idx: torch.Tensor) -> None:
        self.model = model
        if isinstance(model, GPT):
            self.hidden: list[torch.Tensor] | None = model.hiddens(idx)
            self.full: torch.Tensor | None = None
        else:  # test stubs: full logits from forward
            self.hidden, self.full = None, model(idx)[0]

    def at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        if self.hidden is not None:
            logits = self.model.mixture_output([h[rows, cols] for h in self.hidden])
        else:
            assert self.full is not None
            logits = self.full[rows, cols]
        return mask_padding(logits.float())


# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------


@dataclass
class _Seq:
    item: int
    part: str  # "answer" | "prompt" | "compare"
    ids: list[int]  # model input, at most block_size tokens
    targets: list[int]  # predicted by positions first, first+1, ...
    first: int
    dropped: int  # tokens cut from the left to fit block_size


def _completion_seq(i: int, item: Item, block_size: int) -> _Seq:
    ctx, ans = encode(item.prompt), encode(item.expected or "")
    if not ans:
        raise DataError(f"{item.source}: the expected answer encodes to no tokens")
    inputs = (ctx + ans)[:-1]
    drop = max(0, len(inputs) - block_size)
    first = len(ctx) - 1 - drop
    if first < 0:
        raise DataError(
            f"{item.source}: the expected answer ({len(ans)} tokens) does not fit the model's "
            f"context of {block_size} tokens; shorten it"
        )
    return _Seq(i, "answer", inputs[drop:], ans, first, drop)


def _text_seq(i: int, part: str, text: str, block_size: int) -> _Seq:
    ids = encode(text)
    inputs = [EOT_ID, *ids][:-1]
    drop = max(0, len(inputs) - block_size)
    return _Seq(i, part, inputs[drop:], ids[drop:], 0, drop)


def build_sequences(items: Sequence[Item], block_size: int) -> list[_Seq]:
    seqs: list[_Seq] = []
    for i, item in enumerate(items):
        if item.kind == "completion":
            seqs.append(_completion_seq(i, item, block_size))
        else:
            seqs.append(_text_seq(i, "prompt", item.prompt, block_size))
            seqs.append(_text_seq(i, "compare", item.compare or "", block_size))
    return seqs


def _batches(seqs: list[_Seq], batch_size: int) -> Iterator[list[_Seq]]:
    order = sorted(seqs, key=lambda s: -len(s.ids))  # similar lengths together: little padding
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass
class _Partial:
    logp: list[float] = field(default_factory=list)  # log-prob of each target
    rank: int = 0
    top5: list[tuple[int, float]] = field(default_factory=list)
    dropped: int = 0


def _full_rank(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 + #(logit > target's) + #(logit == target's at a lower id): argmax's tie-breaking."""
    lt = logits.gather(1, target[:, None])
    ids = torch.arange(logits.shape[1], device=logits.device)
    greater = (logits > lt).sum(1)
    tied_before = ((logits == lt) & (ids[None, :] < target[:, None])).sum(1)
    return 1 + greater + tied_before


@dataclass
class _Targets:
    """Every scored position of one padded batch: (row, column) -> target id, and its owner."""

    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    owners: list[tuple[_Seq, int]] = field(default_factory=list)  # (sequence, target index)


def _pad(batch: list[_Seq]) -> tuple[torch.Tensor, _Targets]:
    """Right-pad a batch with EOT (never read: causal attention) and list its targets."""
    idx = torch.full((len(batch), max(len(s.ids) for s in batch)), EOT_ID, dtype=torch.long)
    tg = _Targets()
    for r, s in enumerate(batch):
        idx[r, : len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
        for k, t in enumerate(s.targets):
            tg.rows.append(r)
            tg.cols.append(s.first + k)
            tg.ids.append(t)
            tg.owners.append((s, k))
    return idx, tg


def _score_batch(
    logits_of: BatchLogits,
    tg: _Targets,
    parts: dict[tuple[int, str], _Partial],
    device: torch.device,
) -> None:
    """Log-probabilities of every target; rank and top-5 where an answer's first token is."""
    rows = torch.tensor(tg.rows, device=device)
    cols = torch.tensor(tg.cols, device=device)
    ids = torch.tensor(tg.ids, device=device)
    for lo in range(0, len(tg.rows), HEAD_CHUNK):
        sl = slice(lo, lo + HEAD_CHUNK)
        owners = tg.owners[sl]
        logits = logits_of.at(rows[sl], cols[sl])
        logp = torch.log_softmax(logits, dim=-1)
        tgt = ids[sl]
        for (s, _), value in zip(owners, logp.gather(1, tgt[:, None])[:, 0].tolist(), strict=True):
            parts[(s.item, s.part)].logp.append(value)
        firsts = [j for j, (s, k) in enumerate(owners) if s.part == "answer" and k == 0]
        if not firsts:
            continue
        fj = torch.tensor(firsts, device=device)
        ranks = _full_rank(logits[fj], tgt[fj]).tolist()
        top_p, top_i = torch.topk(logp[fj].exp(), 5, dim=-1)
        for j, rank, ps, ts in zip(firsts, ranks, top_p.tolist(), top_i.tolist(), strict=True):
            s, _ = owners[j]
            part = parts[(s.item, s.part)]
            part.rank = int(rank)
            part.top5 = list(zip(ts, ps, strict=True))


@torch.inference_mode()
def score_items(
    model: nn.Module,
    items: Sequence[Item],
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    block_size: int | None = None,
) -> ScoreRun:
    """Score ``items`` with ``model`` in eval mode (biases at ``sb.eval``); see the module doc.

    ``block_size`` defaults to ``model.cfg.block_size``. The model's train/eval mode is
    restored afterwards.
    """
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if items and getattr(getattr(model, "cfg", None), "mask", "causal") != "causal":
        # Teacher-forced scoring reads every answer position from one padded forward: with
        # bidirectional attention each would see its own target and the padding.
        raise SymbreakError(
            "puzzle scoring needs a causal model (model.mask=causal); this run uses "
            "model.mask=bidirectional (use --suite none --val for its validation loss)"
        )
    if block_size is None:
        block_size = model.cfg.block_size  # type: ignore[union-attr]
    device = torch.device(device)
    seqs = build_sequences(items, block_size)
    parts = {(s.item, s.part): _Partial(dropped=s.dropped) for s in seqs}
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        for batch in _batches(seqs, batch_size):
            idx, targets = _pad(batch)
            idx = idx.to(device)
            _score_batch(BatchLogits(model, idx), targets, parts, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    results = [_finish(i, item, parts) for i, item in enumerate(items)]
    n_tokens = sum(len(s.ids) for s in seqs)
    return ScoreRun(results, seconds, len(seqs), n_tokens, batch_size)


def _finish(i: int, item: Item, parts: dict[tuple[int, str], _Partial]) -> ItemResult:
    if item.kind == "completion":
        p = parts[(i, "answer")]
        first_ce = -p.logp[0]
        answer_ce = -sum(p.logp) / len(p.logp)
        top1 = float(p.rank == 1)
        metrics = {
            "acc": top1,
            "top1": top1,
            "top5": float(p.rank <= 5),
            "rank": float(p.rank),
            "first_ce": first_ce,
            "answer_ce": answer_ce,
        }
        return ItemResult(item, metrics, p.top5, len(p.logp), p.dropped)
    a, c = parts[(i, "prompt")], parts[(i, "compare")]
    ce_a = -sum(a.logp) / max(len(a.logp), 1)
    ce_c = -sum(c.logp) / max(len(c.logp), 1)
    preferred = float(ce_a < ce_c)
    metrics = {
        "acc": preferred,
        "preferred": preferred,
        "ce_prompt": ce_a,
        "ce_compare": ce_c,
        "ppl_ratio": math.exp(min(ce_c - ce_a, 700.0)),
    }
    return ItemResult(item, metrics, [], len(a.logp) + len(c.logp), max(a.dropped, c.dropped))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass
class CategorySummary:
    name: str
    kind: str
    n: int
    metrics: dict[str, Estimate]


@dataclass
class Summary:
    """Per-category estimates, and overall ``{metric: {"macro": ..., "micro": ...}}``."""

    categories: dict[str, CategorySummary]
    overall: dict[str, dict[str, Estimate]]


def _by_category(results: Sequence[ItemResult]) -> dict[str, list[ItemResult]]:
    groups: dict[str, list[ItemResult]] = {}
    for r in results:
        groups.setdefault(r.item.category, []).append(r)
    return groups


def _values(rs: Sequence[ItemResult], metric: str) -> np.ndarray:
    return np.array([r.metrics[metric] for r in rs], dtype=np.float64)


def _estimate(x: np.ndarray, metric: Metric, rng: np.random.Generator, resamples: int) -> Estimate:
    mean = float(x.mean())
    if metric.rate:
        lo, hi = wilson_interval(float(x.sum()), len(x))
    else:
        lo, hi = bootstrap_interval(bootstrap_means(x, resamples, rng), len(x))
    return Estimate(mean, lo, hi, len(x))


def _overall(
    groups: list[np.ndarray], rate: bool, rng: np.random.Generator, resamples: int
) -> dict[str, Estimate]:
    """Macro and micro means over categories.

    Means: a bootstrap stratified by category. Rates: Wilson intervals, for the macro average
    at Kish's effective sample size ``K^2 / sum(1 / n_c)`` (the macro average weighs item i of
    category c by 1 / n_c; with equal category sizes this is just the item count). A bootstrap
    would give a zero-width interval for a rate that is 0% in every category.
    """
    sizes = np.array([len(x) for x in groups], dtype=np.float64)
    n = int(sizes.sum())
    macro = float(np.mean([x.mean() for x in groups]))
    micro = float(np.concatenate(groups).mean())
    if rate:
        n_eff = len(groups) ** 2 / float(np.sum(1.0 / sizes))
        macro_ci = wilson_interval(macro * n_eff, n_eff)
        micro_ci = wilson_interval(float(np.concatenate(groups).sum()), n)
    else:
        draws = np.stack([bootstrap_means(x, resamples, rng) for x in groups])  # (C, R)
        macro_ci = bootstrap_interval(draws.mean(axis=0), n)
        micro_ci = bootstrap_interval((draws * sizes[:, None]).sum(axis=0) / n, n)
    return {
        "macro": Estimate(macro, *macro_ci, n),
        "micro": Estimate(micro, *micro_ci, n),
    }


def summarize(
    results: Sequence[ItemResult], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> Summary:
    """Per-category and overall estimates of every metric (see the module doc)."""
    groups = _by_category(results)
    categories: dict[str, CategorySummary] = {}
    for name, rs in groups.items():
        metrics = {
            m: _estimate(_values(rs, m), METRICS[m], bootstrap_rng(seed, name, m), resamples)
            for m in rs[0].metrics
        }
        categories[name] = CategorySummary(name, rs[0].item.kind, len(rs), metrics)
    overall: dict[str, dict[str, Estimate]] = {}
    for m, spec in METRICS.items():
        having = [_values(rs, m) for rs in groups.values() if m in rs[0].metrics]
        if having:
            overall[m] = _overall(having, spec.rate, bootstrap_rng(seed, "overall", m), resamples)
    return Summary(categories, overall)


@dataclass
class Differences:
    """``other - base`` per category and overall, with paired-bootstrap 95% intervals."""

    categories: dict[str, dict[str, Estimate]]
    overall: dict[str, dict[str, Estimate]]


def paired_differences(
    base: Sequence[ItemResult],
    other: Sequence[ItemResult],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Differences:
    """Mean of (other - base) item by item; both runs must have scored the same items.

    The interval resamples items (the same indices for both runs), so it accounts for the
    pairing: two runs that agree on the hard items differ much less than two independent
    samples would suggest. Used for rates too (instead of Newcombe's interval, which needs
    the discordant pair counts only but is less general).
    """
    if len(base) != len(other) or any(a.item != b.item for a, b in zip(base, other, strict=True)):
        raise ValueError("paired differences need the same items, in the same order")
    diffs = [
        ItemResult(b.item, {m: b.metrics[m] - a.metrics[m] for m in a.metrics})
        for a, b in zip(base, other, strict=True)
    ]
    groups = _by_category(diffs)
    categories = {
        name: {
            m: Estimate(
                float(x.mean()),
                *bootstrap_interval(
                    bootstrap_means(x, resamples, bootstrap_rng(seed, "diff", name, m)), len(x)
                ),
                len(x),
            )
            for m in rs[0].metrics
            for x in [_values(rs, m)]
        }
        for name, rs in groups.items()
    }
    overall: dict[str, dict[str, Estimate]] = {}
    for m in METRICS:
        having = [_values(rs, m) for rs in groups.values() if m in rs[0].metrics]
        if having:
            overall[m] = _overall(having, False, bootstrap_rng(seed, "diff-overall", m), resamples)
    return Differences(categories, overall)
