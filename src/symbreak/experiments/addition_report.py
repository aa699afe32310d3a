"""``symbreak report SWEEP_DIR --task addition``: the addition experiment read off its runs.

Every evaluation of a ``data.source=addition`` run logs ``exact_match`` in ``metrics.csv``: greedy
answers to the first min(1000, ``data.addition_val``) held-out problems, the prompt
``aaa+bbb=`` alone, argmax over the 13 characters (:mod:`symbreak.eval.addition`). Per cell
(config minus the seed) this report gives:

* **exact match at the end**: the last evaluation's exact match, mean over seeds with the
  min-max and every seed's value;
* **steps to threshold** (default 90%): the first evaluated step at or above it, per seed
  (``never`` when the run did not get there), and the median over seeds (a seed that never got
  there counts as later than any step; the median is ``never`` when half or more did not);
* **probes** (unless ``--no-probes``), on each run's latest checkpoint, averaged over seeds:
  the permutation test at n = the prompt's length (``aaa+bbb=``, 8; 9 with the leading newline
  of ``data.addition_bos``), whose last position predicts the first answer digit: the largest
  relative change of those logits when the characters before ``=`` are shuffled, in float64;
  and the position probe (:mod:`symbreak.analysis.position`): R^2 of a ridge probe from the
  hidden state to the position in the problem, at the embedding output and after the last
  block, with the random-init control, and the adjacency score after the last block.

Validation loss is kept in the JSON but not compared in the table: a causal model's loss covers
all 13 characters of a problem (the operands are unpredictable), a bidirectional model's only the
4 answer digits (:func:`symbreak.data.loss_positions`), so the two are different quantities.

Writes ``report.md``, ``report.json`` and ``exact_match.png`` (exact match against steps, one
panel per combination of the non-positional axes, seed mean and min-max) into ``--out``
(default ``SWEEP_DIR/report-addition``); run directories in it are relative to ``--out``, and
its ``provenance`` entry names the symbreak version and git commit that wrote it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from symbreak.errors import ExperimentError
from symbreak.experiments.collect import Collection, Record, collect
from symbreak.experiments.report import write_report
from symbreak.outputs import portable_path
from symbreak.plotting import pyplot
from symbreak.provenance import provenance

PROBE_SEQUENCES = 32
PROBE_FIT, PROBE_SCORE = 64, 32


def exact_match_curve(r: Record) -> tuple[list[int], list[float]]:
    """(steps, exact match) of a run's evaluations; an error if it logged none."""
    pairs = [(s, v) for s, v in zip(r.steps, r.exact_match, strict=True) if v is not None]
    steps, em = [s for s, _ in pairs], [v for _, v in pairs]
    if not em:
        raise ExperimentError(
            f"{r.run_dir} logged no exact_match in metrics.csv: it is not a data.source=addition "
            "run, or it was trained before addition runs logged it; use `symbreak eval RUN_DIR "
            "--task addition` on it instead"
        )
    return steps, em


def steps_to(steps: list[int], values: list[float], threshold: float) -> int | None:
    """The first step whose value is at least ``threshold``; None if none is."""
    return next((s for s, v in zip(steps, values, strict=True) if v >= threshold), None)


def median_steps(values: list[int | None]) -> float | None:
    """Median with None (never) as +infinity; None when the median itself is never."""
    keyed = sorted(math.inf if v is None else float(v) for v in values)
    m = statistics.median(keyed)
    return None if math.isinf(m) else m


def probe_run(run_dir: Path) -> dict[str, float]:
    """Permutation change at n = the prompt's length and the position-probe figures of one
    run (CPU, float64)."""
    import torch

    from symbreak.analysis.permutation import permutation_test
    from symbreak.analysis.position import probe_positions
    from symbreak.analysis.sources import held_out_tokens, load_source, random_init_control
    from symbreak.data import addition_spec

    src = load_source(run_dir, None)
    T = src.cfg.model.block_size
    n = addition_spec(src.cfg.data).prompt  # 8, or 9 with the leading newline
    tokens = held_out_tokens(src.cfg, PROBE_SEQUENCES, n, "val", 0)
    perm = permutation_test(src.model, tokens, [n], 4, 0, torch.float64)
    seqs = held_out_tokens(src.cfg, PROBE_FIT + PROBE_SCORE, T, "val", 0)
    pos = probe_positions(
        src.label, src.model, random_init_control(src.cfg), seqs[:PROBE_FIT], seqs[PROBE_FIT:]
    )
    first, last = pos.layers[0], pos.layers[-1]
    return {
        "perm_rel_change": perm.max_rel_change,
        "r2_embedding": first.r2,
        "r2_last": last.r2,
        "r2_last_random_init": last.r2_random_init,
        "r2_by_layer": [layer.r2 for layer in pos.layers],
        "adjacency_last": last.adjacency,
        "adjacency_last_random_init": last.adjacency_random_init,
    }


def _cell_key(r: Record, seed_axes: set[str]) -> str:
    labels = [v for k, v in r.labels.items() if k not in seed_axes]
    if not labels:  # loose runs: what collect() found differing between them
        labels = [x for x in (r.panel, r.variant) if x and x != "all"]
    return "-".join(labels) or "all"


def build(
    col: Collection,
    threshold: float,
    probes: bool,
    echo: Callable[[str], None] = print,
    out: Path | None = None,
) -> dict[str, Any]:
    """The report's data; run directories relative to ``out``, the report's directory."""
    seed_axes = {"train.seed", "seed"}
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in col.records:
        steps, em = exact_match_curve(r)
        run = {
            "run_dir": portable_path(r.run_dir, out),
            "seed": r.seed,
            "labels": r.labels,
            "pos_encoding": r.config.get("model.pos_encoding"),
            "mask": r.config.get("model.mask"),
            "residual": r.config.get("model.residual"),
            "steps": steps,
            "exact_match": em,
            "final_exact_match": em[-1],
            "final_step": steps[-1],
            "steps_to_threshold": steps_to(steps, em, threshold),
            "final_val_loss": r.final_val_loss,
        }
        if probes:
            echo(f"probing {r.run_dir.name}")
            run["probes"] = probe_run(r.run_dir)
        cells.setdefault(_cell_key(r, seed_axes), []).append(run)
    out_cells = []
    for name, runs in cells.items():
        finals = [x["final_exact_match"] for x in runs]
        cell = {
            "cell": name,
            "pos_encoding": runs[0]["pos_encoding"],
            "mask": runs[0]["mask"],
            "residual": runs[0]["residual"],
            "seeds": [x["seed"] for x in runs],
            "final_exact_match": {
                "mean": statistics.fmean(finals),
                "min": min(finals),
                "max": max(finals),
                "per_seed": finals,
            },
            "steps_to_threshold": {
                "median": median_steps([x["steps_to_threshold"] for x in runs]),
                "per_seed": [x["steps_to_threshold"] for x in runs],
            },
        }
        if probes:
            keys = [k for k in runs[0]["probes"] if k != "r2_by_layer"]
            cell["probes"] = {k: statistics.fmean(x["probes"][k] for x in runs) for k in keys}
            by_layer = zip(*(x["probes"]["r2_by_layer"] for x in runs), strict=True)
            cell["probes"]["r2_by_layer"] = [statistics.fmean(v) for v in by_layer]
        out_cells.append(cell)
    return {
        "title": col.title,
        "threshold": threshold,
        "probes": probes,
        "skipped": col.skipped,
        "cells": out_cells,
        "runs": [x for runs in cells.values() for x in runs],
        "provenance": provenance(),
    }


def _steps(v: float | None) -> str:
    return "never" if v is None else f"{v:,.0f}"


def markdown(data: dict[str, Any], figures: list[str]) -> str:
    thr = f"{data['threshold']:.0%}"
    lines = [f"# {data['title']}: addition", ""]
    head = ["cell", "pos", "mask", "residual", "exact match (mean [min, max])", "per seed",
            f"steps to {thr} (median)", "per seed"]  # fmt: skip
    if data["probes"]:
        head += ["perm. change (prompt)", "R² emb", "R² last (init)", "adjacency last (init)"]
    rows = []
    for c in data["cells"]:
        em = c["final_exact_match"]
        row = [
            c["cell"],
            str(c["pos_encoding"]),
            str(c["mask"]),
            str(c["residual"]),
            f"{em['mean']:.3f} [{em['min']:.3f}, {em['max']:.3f}]",
            " / ".join(f"{v:.3f}" for v in em["per_seed"]),
            _steps(c["steps_to_threshold"]["median"]),
            " / ".join(_steps(v) for v in c["steps_to_threshold"]["per_seed"]),
        ]
        if data["probes"]:
            p = c["probes"]
            row += [
                f"{p['perm_rel_change']:.2e}",
                f"{p['r2_embedding']:.3f}",
                f"{p['r2_last']:.3f} ({p['r2_last_random_init']:.3f})",
                f"{p['adjacency_last']:.3f} ({p['adjacency_last_random_init']:.3f})",
            ]
        rows.append(row)
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        f"Exact match: greedy answers to the held-out problems at the last evaluation. Steps to "
        f"{thr}: the first evaluation at or above it (evaluations every train.eval_every steps).",
    ]
    if data["probes"]:
        lines.append(
            "Probes on each run's latest checkpoint, mean over seeds: perm. change = largest "
            "relative change of the logits after the prompt `aaa+bbb=` when the characters "
            "before `=` are shuffled (float64; < 1e-10 is exact invariance); R² = ridge probe "
            "of the position in the problem from the hidden state (emb = embedding output, "
            "last = after the last block; init = the same probe on a random-init model); "
            "adjacency = similarity of nearby minus distant positions."
        )
    if data["skipped"]:
        lines += ["", f"Not finished, left out: {', '.join(data['skipped'])}."]
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    runs = data["runs"]
    panels = list(dict.fromkeys((r["mask"], r["residual"]) for r in runs))
    pos = list(dict.fromkeys(r["pos_encoding"] for r in runs))
    colours = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(pos)}
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, (mask, res) in zip(axes.flat, panels, strict=False):
        for p in pos:
            rs = [
                r for r in runs if (r["mask"], r["residual"], r["pos_encoding"]) == (mask, res, p)
            ]
            if not rs:
                continue
            common = sorted(set.intersection(*(set(r["steps"]) for r in rs)))
            ys = [[r["exact_match"][r["steps"].index(s)] for r in rs] for s in common]
            ax.plot(common, [statistics.fmean(y) for y in ys], color=colours[p],
                    label=f"pos {p} (n={len(rs)})")  # fmt: skip
            ax.fill_between(common, [min(y) for y in ys], [max(y) for y in ys],
                            color=colours[p], alpha=0.2, linewidth=0)  # fmt: skip
        ax.axhline(data["threshold"], color="black", linewidth=0.6, linestyle=":")
        ax.set_title(f"mask {mask}, residual {res}")
        ax.set_xlabel("step")
        ax.set_ylabel("held-out exact match")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{data['title']}: addition exact match, seed mean and min-max")
    fig.tight_layout()
    fig.savefig(out / "exact_match.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return ["exact_match.png"]


def build_addition_report(
    paths: list[Path],
    out: Path | None = None,
    threshold: float = 0.9,
    probes: bool = True,
    plot_figures: bool = True,
    echo: Callable[[str], None] = print,
) -> int:
    """The report of ``data.source=addition`` runs: held-out exact match, steps to
    ``threshold`` and (``probes``) the positional probes, written to ``out`` (default
    ``SWEEP_DIR/report-addition/``). Returns an exit code (0). What ``symbreak report --task
    addition`` does.

    >>> from pathlib import Path
    >>> from symbreak.experiments import build_addition_report
    >>> build_addition_report([Path("runs/addition")], threshold=0.99)  # doctest: +SKIP
    0
    """
    if not 0.0 < threshold <= 1.0:
        raise ExperimentError(f"--threshold must be in (0, 1], got {threshold}")
    if out is not None and out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} is a file; give a directory for the report")
    col = collect(paths)
    if out is None:
        out = (col.sweep_dir or Path(paths[0]).resolve().parent) / "report-addition"
    data = build(col, threshold, probes, echo, out)
    out.mkdir(parents=True, exist_ok=True)
    figures = plot(data, out) if plot_figures else []
    write_report(out, markdown(data, figures), data, figures, echo)
    return 0
