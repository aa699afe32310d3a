"""What ``eval`` and ``compare`` print and write: text tables, JSON, and a PNG chart.

Everything here is presentation: the numbers come from :mod:`symbreak.eval.scoring`. The JSON
holds the same figures as the tables (means with their 95% intervals) plus every item, so a
result can be audited or re-analysed without re-running the model. matplotlib is imported only
inside :func:`plot_compare`, so the package works without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symbreak.data import decode
from symbreak.eval.scoring import (
    METRICS,
    Differences,
    Estimate,
    ItemResult,
    Metric,
    ScoreRun,
    Summary,
)
from symbreak.jsonio import write_json_atomic
from symbreak.plotting import check_labels

COMPLETION_COLUMNS = ("top1", "top5", "rank", "first_ce", "answer_ce")
COMPARISON_COLUMNS = ("preferred", "ce_prompt", "ce_compare", "ppl_ratio")
COMPARE_METRICS = ("acc", "top5", "rank", "first_ce", "answer_ce", "ppl_ratio")
# Written into every eval JSON, so a result file explains its own numbers.
METHODS = {
    "completion": "answer tokens appended to the prompt's tokens; top1/top5/rank/first_ce at "
    "the answer's first token; answer_ce = mean cross-entropy per answer token (teacher "
    "forcing); rank over the 50257 real tokens, ties broken by token id as argmax does",
    "comparison": "each text scored after an end-of-text token; ce = mean per token; "
    "preferred = ce_prompt < ce_compare; ppl_ratio = exp(ce_compare - ce_prompt)",
    "vocabulary": "logits of ids >= 50257 (vocabulary padding) are -inf: no mass, no rank",
    "truncation": "inputs longer than model.block_size keep their last block_size tokens; "
    "'truncated' counts the prompt tokens dropped",
    "intervals": "95%: Wilson score for rates (macro: at Kish's effective sample size), "
    "seeded percentile bootstrap (1000 resamples, stratified by category for overall) "
    "for the others",
    "units": "cross-entropies in nats",
}


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _nums(values: Sequence[float], metric: Metric, signed: bool = False) -> list[str]:
    """Format an estimate's numbers alike: rates in percent (one decimal), ranks whole when
    large, losses with three decimals."""
    sign = "+" if signed else ""
    scale = 100.0 if metric.rate else 1.0
    large = max(abs(v) for v in values) >= 100
    if metric.rate:
        spec = f"{sign}.1f"
    elif metric.name == "rank":
        spec = f"{sign}.0f" if large else f"{sign}.1f"
    else:
        spec = f"{sign}.4g" if large else f"{sign}.3f"
    return [format(scale * v, spec) for v in values]


def format_estimate(e: Estimate, metric: Metric, ci: bool = True) -> str:
    """``12.5% [8.6, 17.8]`` for rates, ``4.213 [4.051, 4.380]`` otherwise."""
    mean, lo, hi = _nums((e.mean, e.lo, e.hi), metric)
    unit = "%" if metric.rate else ""
    if ci and not e.has_interval:
        return f"{mean}{unit} (too few items)"
    return f"{mean}{unit} [{lo}, {hi}]" if ci else f"{mean}{unit}"


def format_difference(e: Estimate, metric: Metric) -> str:
    """``+7.5 [+2.0, +13.0] *``: percentage points for rates; ``*`` when the CI excludes 0."""
    mean, lo, hi = _nums((e.mean, e.lo, e.hi), metric, signed=True)
    if not e.has_interval:
        return f"{mean} (too few items)"
    return f"{mean} [{lo}, {hi}]" + (" *" if e.excludes_zero() else "")


def grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column, right-align the others, two spaces apart."""
    table = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for r in table:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _header(metric: str, ci: bool = True) -> str:
    return METRICS[metric].label + (" [95% CI]" if ci else "")


def eval_table(summary: Summary) -> str:
    """The per-category tables of one run (completion and comparison categories apart), each
    closed by macro and micro averages, then the overall accuracy line."""
    blocks = []
    for kind, columns in (("completion", COMPLETION_COLUMNS), ("comparison", COMPARISON_COLUMNS)):
        cats = [c for c in summary.categories.values() if c.kind == kind]
        if not cats:
            continue
        ci_cols = {m for m in columns if m not in ("ce_prompt", "ce_compare")}
        rows = [
            [c.name, str(c.n)]
            + [format_estimate(c.metrics[m], METRICS[m], m in ci_cols) for m in columns]
            for c in cats
        ]
        for avg in ("macro", "micro"):
            rows.append(
                [avg, str(summary.overall[columns[0]][avg].n)]
                + [
                    format_estimate(summary.overall[m][avg], METRICS[m], m in ci_cols)
                    for m in columns
                ]
            )
        header = [kind, "n"] + [_header(m, m in ci_cols) for m in columns]
        blocks.append(grid(header, rows))
    acc = summary.overall.get("acc")
    if acc:
        blocks.append(
            "overall accuracy (Top-1 or preferred): "
            f"macro {format_estimate(acc['macro'], METRICS['acc'])}, "
            f"micro {format_estimate(acc['micro'], METRICS['acc'])}, {acc['micro'].n} items"
        )
    return "\n\n".join(blocks)


def timing_line(score: ScoreRun) -> str:
    per_s = len(score.results) / max(score.seconds, 1e-9)
    line = (
        f"scored {len(score.results)} items ({score.sequences} sequences, {score.tokens:,} "
        f"tokens, batch {score.batch_size}) in {score.seconds:.1f} s ({per_s:.0f} items/s)"
    )
    if score.truncated_items:
        line += (
            f"; {score.truncated_items} item(s) longer than the context were cut on the left "
            "(see 'truncated' in the JSON)"
        )
    return line


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def item_json(r: ItemResult) -> dict[str, Any]:
    """One item with its scores; completions add the top-5 predicted next tokens."""
    out: dict[str, Any] = {"category": r.item.category, "source": r.item.source, **r.item.to_json()}
    out.update(r.metrics)
    for flag in ("acc", "top1", "top5", "preferred"):
        if flag in out:
            out[flag] = bool(out[flag])
    if "rank" in out:
        out["rank"] = int(out["rank"])
    out["tokens"] = r.tokens
    out["truncated"] = r.truncated
    if r.item.kind == "completion":
        out["top5_predictions"] = [{"token": decode([i]), "id": i, "prob": p} for i, p in r.top5]
    return out


def summary_json(summary: Summary) -> dict[str, Any]:
    return {
        "categories": {
            c.name: {
                "kind": c.kind,
                "n": c.n,
                "metrics": {m: e.to_json() for m, e in c.metrics.items()},
            }
            for c in summary.categories.values()
        },
        "overall": {
            m: {avg: e.to_json() for avg, e in by.items()} for m, by in summary.overall.items()
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temporary file, then rename), creating the parent directory."""
    write_json_atomic(path, data)


# --------------------------------------------------------------------------------------------
# Compare
# --------------------------------------------------------------------------------------------


def compare_table(
    names: Sequence[str], summaries: Sequence[Summary], diffs: Sequence[Differences]
) -> str:
    """One block per metric: categories as rows, runs side by side, then each run's difference
    to the first with its paired-bootstrap 95% CI (``*``: the CI excludes zero)."""
    blocks = []
    for m in COMPARE_METRICS:
        metric = METRICS[m]
        cats = [c for c in summaries[0].categories.values() if m in c.metrics]
        if not cats:
            continue
        header = [metric.label, "n", *names]
        header += [f"{n} - {names[0]} [95% CI]" for n in names[1:]]
        rows = []
        for c in cats:
            row = [c.name, str(c.n)]
            row += [
                format_estimate(s.categories[c.name].metrics[m], metric, False) for s in summaries
            ]
            row += [format_difference(d.categories[c.name][m], metric) for d in diffs]
            rows.append(row)
        for avg in ("macro", "micro"):
            row = [avg, str(summaries[0].overall[m][avg].n)]
            row += [format_estimate(s.overall[m][avg], metric, False) for s in summaries]
            row += [format_difference(d.overall[m][avg], metric) for d in diffs]
            rows.append(row)
        blocks.append(grid(header, rows))
    note = (
        "differences: later run minus the first, item by item; rates in percentage points; "
        "* = the 95% CI (paired bootstrap over items) excludes 0"
    )
    return "\n\n".join([*blocks, note])


def compare_json(
    runs: Sequence[dict[str, Any]],
    summaries: Sequence[Summary],
    diffs: Sequence[Differences],
) -> dict[str, Any]:
    """Per category and metric: each run's estimate and each later run's paired difference."""

    def diff_json(e: Estimate) -> dict[str, Any]:
        return {**e.to_json(), "excludes_zero": e.excludes_zero()}

    categories: dict[str, Any] = {}
    for name, cat in summaries[0].categories.items():
        categories[name] = {
            "kind": cat.kind,
            "n": cat.n,
            "metrics": {
                m: {
                    "runs": [s.categories[name].metrics[m].to_json() for s in summaries],
                    "diff_vs_first": [diff_json(d.categories[name][m]) for d in diffs],
                }
                for m in cat.metrics
            },
        }
    overall = {
        m: {
            avg: {
                "runs": [s.overall[m][avg].to_json() for s in summaries],
                "diff_vs_first": [diff_json(d.overall[m][avg]) for d in diffs],
            }
            for avg in ("macro", "micro")
        }
        for m in summaries[0].overall
    }
    return {
        "runs": list(runs),
        "difference_method": "paired bootstrap over items (1000 resamples, seeded), "
        "later run minus the first",
        "categories": categories,
        "overall": overall,
    }


def plot_compare(path: Path, names: Sequence[str], summaries: Sequence[Summary]) -> None:
    """Grouped bars: headline accuracy (Top-1 or preferred) per category and macro average,
    one bar per run, with 95% Wilson / bootstrap intervals as error bars. Agg backend, no
    pyplot: nothing global is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cats = list(summaries[0].categories)
    labels = [*cats, "macro"]
    check_labels(names)
    fig = Figure(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(summaries)
    for r, (name, s) in enumerate(zip(names, summaries, strict=True)):
        ests = [s.categories[c].metrics["acc"] for c in cats] + [s.overall["acc"]["macro"]]
        means = [100 * e.mean for e in ests]
        err = [  # clipped at 0: rounding can put an interval's end a hair past the mean
            [max(0.0, 100 * (e.mean - e.lo)) if e.has_interval else 0.0 for e in ests],
            [max(0.0, 100 * (e.hi - e.mean)) if e.has_interval else 0.0 for e in ests],
        ]
        xs = [i + (r - (len(summaries) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, means, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Top-1 (completions) / preferred (comparisons), 95% CI")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
