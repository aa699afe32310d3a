"""``symbreak report``: a Markdown table, a JSON file and PNG curves over a sweep or runs.

Outputs in DIR (default ``SWEEP_DIR/report/``, or ``report/`` beside loose runs' common parent):
``report.md`` (also printed), ``report.json`` (every run's figures, every cell's statistics,
every difference, and the methods), ``curves.png`` (validation loss against tokens, one panel
per optimizer or other setting, one colour per variant, the seed mean as a line and the min-max
over seeds as a band) and ``differences.png`` (the paired difference to the baseline over
training, with its 95% CI band).

Paths in the report (each run's directory, the sweep directory) are relative to DIR, so a
results folder holding the sweep and its report can be moved or published as it is; the
``provenance`` entry names the symbreak version and git commit that wrote the report.

``--from-json`` (:func:`rebuild_report`) recomputes the cells and differences of a report from
the per-run figures its report.json stores (:class:`StoredRun`), through the same code, so a
published report gains later statistics (the correction for multiplicity) without its runs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symbreak import stats
from symbreak.atomic import write_text_atomic
from symbreak.errors import ExperimentError
from symbreak.experiments.collect import (
    Collection,
    Record,
    attach_cot_eval,
    attach_eval,
    collect,
)
from symbreak.jsonio import write_json_atomic
from symbreak.outputs import portable_path
from symbreak.plotting import check_labels, pyplot
from symbreak.provenance import provenance

EVAL_METRICS = ("macro_acc", "answer_ce")
FIGURES = ("curves.png", "differences.png")
# ``--task cot-arithmetic``: exact match (overall and per type) and the reference chain's
# log-probability of each fine-tuned run (collect.attach_cot_eval)
COT_METRICS = ("cot_acc", "cot_T1", "cot_T2", "cot_T3", "cot_T4", "cot_logprob")
# column header, shown in percent, digits
EVAL_COLUMNS: dict[str, tuple[str, bool, int]] = {
    "macro_acc": ("puzzle macro acc", True, 1),
    "answer_ce": ("answer CE", False, 3),
    "cot_acc": ("cot exact match", True, 1),
    "cot_T1": ("T1", True, 1),
    "cot_T2": ("T2", True, 1),
    "cot_T3": ("T3", True, 1),
    "cot_T4": ("T4", True, 1),
    "cot_logprob": ("chain log p", False, 2),
}


def _value(r: Record | StoredRun, metric: str) -> float:
    if metric == "val_loss":
        return r.final_val_loss
    if metric == "best_val_loss":
        return r.best[0]
    return float(r.eval[metric]) if r.eval else math.nan


def _cells(records: list[Any]) -> dict[tuple[str, str], list[Any]]:
    """Records (:class:`Record` or :class:`StoredRun`) by (panel, variant), in seed order."""
    cells: dict[tuple[str, str], list[Any]] = {}
    for r in records:
        cells.setdefault((r.panel, r.variant), []).append(r)
    for (panel, variant), rs in cells.items():
        rs.sort(key=lambda r: r.seed)
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            dup = [r.name for r in rs if seeds.count(r.seed) > 1]
            raise ExperimentError(
                f"runs {', '.join(dup)} are the same cell ({panel} / {variant}) with the same "
                "seed; report each configuration and seed once"
            )
    return cells


def _cell_rows(
    cells: dict[tuple[str, str], list[Any]], metrics: list[str], out: Path | None
) -> list[dict[str, Any]]:
    rows = []
    for (panel, variant), rs in cells.items():
        row: dict[str, Any] = {
            "panel": panel,
            "variant": variant,
            "seeds": [r.seed for r in rs],
            "runs": [portable_path(r.run_dir, out) for r in rs],
            "final_step": sorted({r.final_step for r in rs}),
            "best_step": stats.describe([r.best[1] for r in rs]),
            "tokens": stats.describe([r.final_tokens for r in rs]),
            "tok_per_s": stats.describe([r.tok_per_s for r in rs]),
        }
        for m in metrics:
            row[m] = stats.describe([_value(r, m) for r in rs])
        rows.append(row)
    return rows


def _pairs(
    cells: dict[tuple[str, str], list[Any]], baseline: str | None
) -> list[tuple[str, str, list[tuple[Any, Any]]]]:
    """(panel, variant, [(run, the baseline's run of the same seed)]) for every variant with at
    least one seed in common with the baseline of its panel."""
    out = []
    if baseline is None:
        return out
    for (panel, variant), rs in cells.items():
        base = cells.get((panel, baseline))
        if variant == baseline or base is None:
            continue
        by_seed = {r.seed: r for r in base}
        pairs = [(r, by_seed[r.seed]) for r in rs if r.seed in by_seed]
        if pairs:
            out.append((panel, variant, pairs))
    return out


def _differences(
    cells: dict[tuple[str, str], list[Any]], baseline: str | None, metrics: list[str]
) -> list[dict[str, Any]]:
    """Every variant's paired difference to the baseline, per metric, corrected for the
    multiplicity of each metric's family (:func:`_correct_for_multiplicity`)."""
    diffs = []
    for panel, variant, pairs in _pairs(cells, baseline):
        for m in metrics:
            d = stats.paired([_value(a, m) for a, _ in pairs], [_value(b, m) for _, b in pairs])
            diffs.append(
                {
                    "panel": panel,
                    "variant": variant,
                    "baseline": baseline,
                    "metric": m,
                    "seeds": [a.seed for a, _ in pairs],
                    **d,
                }
            )
    _correct_for_multiplicity(diffs, cells, baseline)
    return diffs


def _methods() -> dict[str, str]:
    return {
        "cells": stats.CELL_METHOD,
        "differences": stats.DIFF_METHOD,
        "val_loss": "the last fixed-set validation loss in metrics.csv (train.eval_tokens "
        "held-out tokens, the same windows at every evaluation)",
        "best_val_loss": "the lowest fixed-set validation loss over the run's evaluations "
        "(not a single batch)",
        "tok_per_s": "median of the logged tok_per_s",
        "significance": "'*': the Bonferroni-corrected CI (level 1 - 0.05/m over the m "
        f"differences of that metric) excludes 0; fewer than {stats.MIN_PAIRS} pairs: "
        "inconclusive whatever the p-value",
    }


def build(
    col: Collection,
    metric: str,
    with_eval: bool,
    out: Path | None = None,
    eval_metrics: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Every figure of the report, as JSON-ready data; paths relative to ``out``, the report's
    directory (absolute without it). ``eval_metrics``: the figures of ``Record.eval`` to add
    (default: the puzzle suite's with ``with_eval``)."""
    cells = _cells(col.records)
    extra = list(eval_metrics if eval_metrics is not None else EVAL_METRICS if with_eval else ())
    metrics = ["val_loss", "best_val_loss", *extra]
    diff_metrics = [metric, *extra]
    curves_diff = []
    for panel, variant, pairs in _pairs(cells, col.baseline):
        curve = stats.paired_curve(
            [a.steps for a, _ in pairs],
            [a.val_loss for a, _ in pairs],
            [b.steps for _, b in pairs],
            [b.val_loss for _, b in pairs],
        )
        curve["tokens"] = [s * _tokens_per_step(pairs[0][0]) for s in curve["steps"]]
        curves_diff.append({"panel": panel, "variant": variant, **curve})
    return {
        "title": col.title,
        "source": col.source,
        "sweep_dir": portable_path(col.sweep_dir, out) if col.sweep_dir else None,
        "metric": metric,
        "eval_metrics": extra,
        "variant_axis": col.variant_axis,
        "baseline": col.baseline,
        "skipped_unfinished": col.skipped,
        "methods": _methods(),
        "runs": [r.to_json(out) for r in col.records],
        "cells": _cell_rows(cells, metrics, out),
        "differences": _differences(cells, col.baseline, diff_metrics),
        "difference_curves": curves_diff,
        "provenance": provenance(),
    }


def _tokens_per_step(r: Record) -> int:
    for s, t in zip(r.steps, r.tokens, strict=True):
        if s:
            return t // s
    return 0


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _est(d: dict[str, Any], digits: int = 4, pct: bool = False) -> str:
    k = 100.0 if pct else 1.0
    u = "%" if pct else ""
    mean = _fmt(k * d["mean"], 1 if pct else digits)
    if d["n"] < 2:
        return f"{mean}{u}"
    lo, hi = (_fmt(k * d[x], 1 if pct else digits) for x in ("ci_lo", "ci_hi"))
    return f"{mean}{u} ± {_fmt(k * d['sd'], 1 if pct else digits)} [{lo}, {hi}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(data: dict[str, Any], figures: list[str]) -> str:
    extra = data.get("eval_metrics", [])
    n_seeds = sorted({len(c["seeds"]) for c in data["cells"]})
    lines = [
        f"# Report: {data['title']}",
        "",
        f"{len(data['runs'])} runs in {len(data['cells'])} cells; seeds per cell: "
        f"{', '.join(map(str, n_seeds))}. Figures: mean ± sd [95% CI] over seeds "
        "(Student t, n-1 df). Losses in nats on the fixed held-out set.",
    ]
    if data.get("recomputed_from"):
        lines += [
            "",
            f"Cells and differences recomputed from the per-run figures in "
            f"`{data['recomputed_from']['report']}` (`symbreak report --from-json`); the "
            "difference curves and figures are the original report's, since per-run curves are "
            "not stored in it.",
        ]
    if data["skipped_unfinished"]:
        lines += ["", f"Not finished, left out: {', '.join(data['skipped_unfinished'])}."]
    header = [
        "panel",
        "variant",
        "n",
        "final val loss",
        "best val loss",
        "best step",
        "tokens",
        "tok/s",
    ]
    header += [EVAL_COLUMNS[m][0] for m in extra]
    rows = []
    for c in data["cells"]:
        row = [
            c["panel"],
            c["variant"],
            str(len(c["seeds"])),
            _est(c["val_loss"]),
            _est(c["best_val_loss"]),
            f"{c['best_step']['mean']:.0f}",
            f"{c['tokens']['mean']:,.0f}",
            f"{c['tok_per_s']['mean']:,.0f}",
        ]
        row += [_est(c[m], EVAL_COLUMNS[m][2], pct=EVAL_COLUMNS[m][1]) for m in extra]
        rows.append(row)
    lines += ["", "## Cells", "", _table(header, rows)]
    if data["baseline"] is None:
        lines += [
            "",
            "No baseline variant (not exactly one variant without biases, and no --baseline): no "
            "differences computed.",
        ]
    elif data["differences"]:
        lines += [
            "",
            f"## Differences to `{data['baseline']}`, paired by seed",
            "",
            "Δ = variant − baseline (for losses, negative is better). `*`: the corrected CI "
            "(Bonferroni over the report's differences of that metric) excludes 0; the plain "
            "95% CI and p are shown beside it.",
            "",
        ]
        rows = []
        for d in data["differences"]:
            pct = EVAL_COLUMNS.get(d["metric"], ("", False, 4))[1]
            k = 100.0 if pct else 1.0
            dig = 1 if pct else 4
            ci, ci_corr = (
                f"[{k * lo:+.{dig}f}, {k * hi:+.{dig}f}]" if math.isfinite(lo) else "n/a"
                for lo, hi in (
                    (d["ci_lo"], d["ci_hi"]),
                    (d.get("ci_lo_corrected", math.nan), d.get("ci_hi_corrected", math.nan)),
                )
            )
            verdict = (
                ("*" if d["significant"] else "")
                if d["conclusive"]
                else (f"n={d['n']}: too few seeds to conclude")
            )
            rows.append(
                [
                    d["panel"],
                    d["variant"],
                    d["metric"],
                    str(d["n"]),
                    f"{k * d['mean_diff']:+.{dig}f}",
                    ci,
                    ci_corr,
                    _p(d["p_paired"]),
                    _p(d.get("p_holm", math.nan)),
                    _p(d["p_welch"]),
                    verdict,
                ]
            )
        lines.append(
            _table(
                [
                    "panel",
                    "variant",
                    "metric",
                    "pairs",
                    "Δ mean",
                    "95% CI",
                    "corrected CI",
                    "paired t p",
                    "Holm p",
                    "Welch p",
                    "",
                ],
                rows,
            )
        )
    else:
        lines += [
            "",
            f"No run shares a seed and panel with the baseline `{data['baseline']}`: "
            "no paired differences.",
        ]
    lines += ["", "Methods: " + "; ".join(f"{k}: {v}" for k, v in data["methods"].items()) + "."]
    for f in figures:
        lines += ["", f"![{f}]({f})"]
    return "\n".join(lines) + "\n"


def _correct_for_multiplicity(
    diffs: list[dict[str, Any]], cells: dict[tuple[str, str], list[Any]], baseline: str | None
) -> None:
    """Every difference of one metric across the report's panels and variants is one family:
    Holm-adjusted p (``p_holm``) and the Bonferroni interval at 1 - 0.05/m
    (``ci_lo_corrected``/``ci_hi_corrected``); ``significant`` then means that the corrected
    interval excludes 0 (``significant_uncorrected`` keeps the plain 95% verdict)."""
    for metric in dict.fromkeys(d["metric"] for d in diffs):
        family = [d for d in diffs if d["metric"] == metric]
        m = sum(math.isfinite(d["p_paired"]) for d in family)
        for d, p in zip(family, stats.holm([d["p_paired"] for d in family]), strict=True):
            d["p_holm"] = p
            d["family_size"] = m
            d["significant_uncorrected"] = d["significant"]
            lo = hi = math.nan
            if m and math.isfinite(d["ci_lo"]):
                base = {r.seed: r for r in cells[(d["panel"], baseline)]}
                runs = {r.seed: r for r in cells[(d["panel"], d["variant"])]}
                a = [_value(runs[s], metric) for s in d["seeds"]]
                b = [_value(base[s], metric) for s in d["seeds"]]
                wide = stats.paired(a, b, confidence=1 - (1 - stats.CONFIDENCE) / m)
                lo, hi = wide["ci_lo"], wide["ci_hi"]
            d["ci_lo_corrected"], d["ci_hi_corrected"] = lo, hi
            d["significant"] = bool(math.isfinite(lo) and (lo > 0 or hi < 0))


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot(data: dict[str, Any], col: Collection, out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    cells = _cells(col.records)
    panels = list(dict.fromkeys(p for p, _ in cells))
    variants = list(dict.fromkeys(v for _, v in cells))
    cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    colours = {v: cmap(i % cmap.N) for i, v in enumerate(variants)}
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    written = []

    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        logx = False
        starts, lows, diverged = [], {}, []
        for v in variants:
            rs = cells.get((panel, v))
            if not rs:
                continue
            common = sorted(set.intersection(*(set(r.steps) for r in rs)))
            x = [rs[0].tokens[rs[0].steps.index(s)] for s in common]
            ys = [[r.val_loss[r.steps.index(s)] for r in rs] for s in common]
            mean = [sum(y) / len(y) for y in ys]
            starts.append(mean[0])
            lows[v] = min(min(y) for y in ys)
            label = f"{v} (n={len(rs)})"
            if max(mean) > 1.05 * mean[0]:  # above its own starting loss: diverged
                diverged.append(v)
                label += ", diverged"
            # few evaluations: mark them, so two points do not pass for a measured curve
            ax.plot(
                x,
                mean,
                color=colours[v],
                label=label,
                marker="o" if len(x) <= 12 else None,
                markersize=3,
            )
            ax.fill_between(
                x,
                [min(y) for y in ys],
                [max(y) for y in ys],
                color=colours[v],
                alpha=0.2,
                linewidth=0,
            )
            pos = [t for t in x if t > 0]
            logx = logx or (len(pos) > 1 and pos[-1] / pos[0] > 30)
        if logx:
            ax.set_xscale("log")
        if diverged and starts:  # keep the converging runs readable; diverged ones leave the top
            low = min((lo for v, lo in lows.items() if v not in diverged), default=0.0)
            ax.set_ylim(low - 0.05 * (max(starts) - low), 1.05 * max(starts))
        _style(ax, panel, "val loss (nats)")
    _save(
        fig,
        axes,
        len(panels),
        f"{data['title']}: validation loss, seed mean and min-max",
        out / "curves.png",
    )
    written.append("curves.png")

    if data["difference_curves"]:
        fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
        for ax, panel in zip(axes.flat, panels, strict=False):
            for c in (c for c in data["difference_curves"] if c["panel"] == panel):
                ax.plot(
                    c["tokens"],
                    c["mean"],
                    color=colours[c["variant"]],
                    label=c["variant"],
                    marker="o" if len(c["tokens"]) <= 12 else None,
                    markersize=3,
                )
                lo = [
                    v if math.isfinite(v) else m for v, m in zip(c["ci_lo"], c["mean"], strict=True)
                ]
                hi = [
                    v if math.isfinite(v) else m for v, m in zip(c["ci_hi"], c["mean"], strict=True)
                ]
                ax.fill_between(
                    c["tokens"], lo, hi, color=colours[c["variant"]], alpha=0.2, linewidth=0
                )
            ax.axhline(0.0, color="black", linewidth=0.8)
            _style(ax, panel, f"Δ val loss vs {data['baseline']}")
        _save(
            fig,
            axes,
            len(panels),
            f"paired difference to {data['baseline']} (mean, 95% CI over seeds)",
            out / "differences.png",
        )
        written.append("differences.png")
    return written


def _style(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("tokens")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    check_labels([title, *labels])
    if len(handles) > 6:  # many variants: beside the panel, not over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif handles:
        ax.legend(fontsize=8)


def _save(fig: Any, axes: Any, used: int, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def default_out(col: Collection, paths: list[Path]) -> Path:
    if col.sweep_dir is not None:
        return col.sweep_dir / "report"
    parent = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    return parent / "report"


def build_report(
    paths: list[Path],
    baseline: str | None = None,
    metric: str = "val_loss",
    with_eval: bool = False,
    out: Path | None = None,
    plot_figures: bool = True,
    echo: Callable[[str], None] = print,
    task: str = "loss",
) -> int:
    """Group the runs (sweep directories or run directories) by their config minus the seed
    and write report.md, report.json and the PNG curves into ``out`` (default
    ``SWEEP_DIR/report/``, or ``report/`` beside loose runs); ``echo`` gets the report's text.
    ``with_eval`` adds the puzzle suite, evaluating runs not yet evaluated at their latest
    checkpoint; ``task="cot-arithmetic"`` adds chain-of-thought exact match (overall, per
    type) and the chain log-probability of fine-tuned runs, the same way. Returns an exit
    code (0). What ``symbreak report`` does.

    >>> from pathlib import Path
    >>> from symbreak.experiments import build_report
    >>> build_report([Path("runs/cpu-study")], baseline="symmetric")  # doctest: +SKIP
    0
    """
    if out is not None and out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} is a file; give a directory for the report")
    col = collect(paths, baseline)
    if with_eval:
        attach_eval(col.records, echo)
    eval_metrics = None
    if task == "cot-arithmetic":
        if with_eval:
            raise ExperimentError(
                "--task cot-arithmetic reports the task, not the puzzle suite: drop --eval"
            )
        attach_cot_eval(col.records, echo)
        eval_metrics = COT_METRICS
    out = out or default_out(col, paths)
    data = build(col, metric, with_eval, out, eval_metrics)
    out.mkdir(parents=True, exist_ok=True)
    figures = plot(data, col, out) if plot_figures else []
    write_report(out, markdown(data, figures), data, figures, echo)
    return 0


@dataclass
class StoredRun:
    """A run as a report.json stores it: its final figures, not its validation curve, which
    is all the cells and differences of a report need."""

    run_dir: Path
    panel: str
    variant: str
    seed: int
    final_val_loss: float
    final_step: int
    best_val_loss: float
    best_step: int
    final_tokens: int
    tok_per_s: float
    eval: dict[str, float] | None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def best(self) -> tuple[float, int]:
        return self.best_val_loss, self.best_step

    def to_json(self, base: Path | None = None) -> dict[str, Any]:
        return {
            "run_dir": portable_path(self.run_dir, base),
            "panel": self.panel,
            "variant": self.variant,
            "seed": self.seed,
            "final_val_loss": self.final_val_loss,
            "final_step": self.final_step,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "tokens": self.final_tokens,
            "tok_per_s": self.tok_per_s,
            "eval": self.eval,
        }


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)  # strict JSON stores NaN as null


def read_stored_report(path: Path) -> tuple[dict[str, Any], list[StoredRun]]:
    """A loss report's report.json and its runs; run directories resolved against the file's
    directory (where the report stored them relative to)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"--from-json {path} does not exist; give a report.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ExperimentError(f"--from-json {path} is not readable JSON ({e})") from None
    where = path.resolve().parent
    try:
        if "threshold" in data:
            raise ExperimentError(
                f"--from-json {path} is an addition report (--task addition): it has no "
                "differences to recompute"
            )
        runs = [
            StoredRun(
                run_dir=where / r["run_dir"],
                panel=str(r["panel"]),
                variant=str(r["variant"]),
                seed=int(r["seed"]),
                final_val_loss=_nan(r["final_val_loss"]),
                final_step=int(r["final_step"]),
                best_val_loss=_nan(r["best_val_loss"]),
                best_step=int(r["best_step"]),
                final_tokens=int(r["tokens"]),
                tok_per_s=_nan(r["tok_per_s"]),
                eval=r.get("eval"),
            )
            for r in data["runs"]
        ]
        missing = [k for k in ("title", "metric", "baseline") if k not in data]
        if missing:
            raise KeyError(missing[0])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ExperimentError(
            f"--from-json {path} is not a report.json of `symbreak report` (bad or missing "
            f"entry {e}); give the report.json a loss report wrote"
        ) from None
    if not runs:
        raise ExperimentError(f"--from-json {path} lists no runs; nothing to recompute")
    return data, runs


def rebuild(
    old: dict[str, Any],
    runs: list[StoredRun],
    source: Path,
    out: Path,
    baseline: str | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """The report of :func:`build` recomputed from a stored report's per-run figures: cells and
    differences (with the correction for multiplicity) anew, the difference curves as stored
    (a curve needs every run's evaluations, which report.json does not keep)."""
    baseline = old["baseline"] if baseline is None else baseline
    variants = list(dict.fromkeys(r.variant for r in runs))
    if baseline is not None and baseline not in variants:
        raise ExperimentError(
            f"--baseline '{baseline}' is not a variant here; variants: {', '.join(variants)}"
        )
    metric = metric or old["metric"]
    with_eval = any(r.eval for r in runs)
    cells = _cells(runs)
    metrics = ["val_loss", "best_val_loss"] + (list(EVAL_METRICS) if with_eval else [])
    diff_metrics = [metric] + (list(EVAL_METRICS) if with_eval else [])
    where = source.resolve().parent
    earlier = old.get("recomputed_from") or {}
    curves = old.get("difference_curves", []) if baseline == old["baseline"] else []
    return {
        "title": old["title"],
        "source": old.get("source"),
        "sweep_dir": portable_path(where / old["sweep_dir"], out) if old.get("sweep_dir") else None,
        "metric": metric,
        "variant_axis": old.get("variant_axis"),
        "baseline": baseline,
        "skipped_unfinished": old.get("skipped_unfinished", []),
        "methods": {
            **_methods(),
            "recomputed": "cells and differences recomputed from the per-run figures of an "
            "earlier report.json (symbreak report --from-json); difference_curves copied from "
            "it",
        },
        "runs": [r.to_json(out) for r in runs],
        "cells": _cell_rows(cells, metrics, out),
        "differences": _differences(cells, baseline, diff_metrics),
        "difference_curves": curves,
        # The runs' own provenance (the code that trained and measured them) is the first
        # report's; null where that report predates provenance records.
        "recomputed_from": {
            "report": portable_path(source, out),
            "provenance": earlier.get("provenance", old.get("provenance")),
        },
        "provenance": provenance(),
    }


def rebuild_report(
    source: Path,
    out: Path | None = None,
    baseline: str | None = None,
    metric: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Recompute a loss report from its report.json alone (the run directories need not
    exist) and write report.md and report.json into ``out`` (default: the JSON's directory,
    which it replaces), keeping the figures found beside the JSON. What ``symbreak report
    --from-json`` does; returns an exit code (0)."""
    if out is not None and out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} is a file; give a directory for the report")
    old, runs = read_stored_report(source)
    out = out or source.parent
    data = rebuild(old, runs, source, out, baseline, metric)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name in FIGURES:
        if name == "differences.png" and not data["difference_curves"]:
            continue
        if (source.parent / name).is_file():
            if (source.parent / name).resolve() != (out / name).resolve():
                shutil.copyfile(source.parent / name, out / name)
            figures.append(name)
    write_report(out, markdown(data, figures), data, figures, echo)
    return 0


def write_report(
    out: Path, text: str, data: dict[str, Any], figures: list[str], echo: Callable[[str], None]
) -> None:
    """report.md and report.json (atomically) into ``out``, and the text on the terminal."""
    write_text_atomic(out / "report.md", text)
    write_json_atomic(out / "report.json", data)
    echo(text.rstrip())
    echo(f"\nwrote {out / 'report.md'}, report.json" + "".join(f", {f}" for f in figures))
