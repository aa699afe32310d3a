"""``symbreak noether RUN... --out FILE.png``: the runs' Noether charges against step, overlaid.

One panel per (layer, sector); in each, one colour per run: the median over the layer's heads
(solid) and the maximum (dashed) of ``charge`` (``|L|_F``) or, with ``--quantity relative``,
``|L|_F / (|W|_F |P|_F)``, on a log scale. Zeros cannot be drawn on a log scale and are left
out (an exactly conserved charge that started at 0 shows as no line). The rows come from each
run's ``noether.csv`` (``train.log_noether=true``; see :mod:`symbreak.train.noether`).
"""

from __future__ import annotations

import collections
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from symbreak.analysis.options import NOETHER_QUANTITIES
from symbreak.atomic import fsync_dir
from symbreak.errors import SymbreakError
from symbreak.plotting import check_labels, require_matplotlib
from symbreak.train.noether_log import FILENAME

SECTOR_NAMES = {"qk": "Q-K", "vo": "V-O"}
QUANTITIES = NOETHER_QUANTITIES


@dataclass
class RunCharges:
    """One run's charges: ``values[step, layer, head, sector]`` of one quantity."""

    name: str
    label: str
    steps: np.ndarray
    values: np.ndarray  # (n_steps, n_layer, n_head, 2)
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    path: Path = Path()


def load_run(run_dir: Path, quantity: str = "charge") -> RunCharges:
    """Read ``RUN/noether.csv``; a one-line :class:`SymbreakError` if it is missing or empty.

    A run killed while logging may leave its last step cut short (a partial last line, or
    fewer rows than the steps before): that step is left out, and ``notes`` says so."""
    path = Path(run_dir) / FILENAME
    if not Path(run_dir).is_dir():
        raise SymbreakError(f"{run_dir} is not a run directory")
    if not path.is_file():
        raise SymbreakError(f"{run_dir} has no {FILENAME}: train it with train.log_noether=true")
    import csv

    text = path.read_text(encoding="utf-8", errors="replace")
    all_rows = list(csv.DictReader(text.splitlines(keepends=True)))
    if text and not text.endswith("\n") and all_rows:
        all_rows.pop()  # a line cut mid-write
    notes = []
    per_step = collections.Counter(r.get("step") for r in all_rows)
    if len(per_step) > 1:
        last = all_rows[-1].get("step")
        if per_step[last] < max(per_step.values()):
            all_rows = [r for r in all_rows if r.get("step") != last]
            notes.append(
                f"{path}: step {last} is incomplete (the run stopped while logging it); left out"
            )
    rows = [r for r in all_rows if r.get("relative") not in (None, "")]
    if not rows:
        raise SymbreakError(f"{path} has no rows yet (charges are written at log steps)")
    try:
        steps = sorted({int(r["step"]) for r in rows})
        n_layer = 1 + max(int(r["layer"]) for r in rows)
        n_head = 1 + max(int(r["head"]) for r in rows)
        index = {s: i for i, s in enumerate(steps)}
        values = np.full((len(steps), n_layer, n_head, 2), np.nan)
        sectors = list(SECTOR_NAMES)
        for r in rows:
            values[
                index[int(r["step"])], int(r["layer"]), int(r["head"]), sectors.index(r["sector"])
            ] = float(r[quantity])
    except (KeyError, ValueError) as e:
        raise SymbreakError(f"{path} is not a noether.csv written by symbreak ({e})") from None
    run_dir = Path(run_dir)
    return RunCharges(run_dir.name, _label(run_dir), np.array(steps), values, notes, run_dir)


def _unique_labels(runs: list[RunCharges]) -> None:
    """Runs of the same name (``a/seed0``, ``b/seed0``) get their parent directory in front, so
    no two legend entries read alike."""
    counts = collections.Counter(r.label for r in runs)
    for r in runs:
        if counts[r.label] > 1:
            r.label = f"{r.path.resolve().parent.name}/{r.label}"


def _label(run_dir: Path) -> str:
    """``name (optimizer, biases)`` from the run's config.toml, when it has one."""
    try:
        cfg = tomllib.loads((run_dir / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return run_dir.name
    opt = cfg.get("optim", {}).get("name", "?")
    sb = cfg.get("sb", {})
    biases = "+".join("b" + k.upper() for k in ("q", "k", "v") if sb.get(k)) or "symmetric"
    note = ", exp_avg: not conserved" if opt == "adamw" else ""
    return f"{run_dir.name} ({opt}, {biases}{note})"


def plot(runs: list[RunCharges], out: Path, quantity: str = "charge") -> None:
    """Draw the panels and write ``out`` atomically (format from its suffix). Agg, no pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n_layer = max(r.values.shape[1] for r in runs)
    fig = Figure(figsize=(10, 1.2 + 2.2 * n_layer), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_layer, 2, sharex=True, squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for run, colour in zip(runs, colours, strict=True):
        v = np.where(run.values > 0, run.values, np.nan)  # log scale: zeros left out
        with np.errstate(all="ignore"), _quiet_nan_warnings():
            med = np.nanmedian(v, axis=2)  # (steps, layer, sector)
            top = np.nanmax(v, axis=2)
        for layer in range(run.values.shape[1]):
            for s in range(2):
                ax = axes[layer, s]
                ax.plot(run.steps, med[:, layer, s], color=colour, lw=1.4)
                ax.plot(run.steps, top[:, layer, s], color=colour, lw=0.9, ls="--")
    for layer in range(n_layer):
        for s, sector in enumerate(SECTOR_NAMES.values()):
            ax = axes[layer, s]
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.set_title(f"layer {layer}, {sector}", fontsize="small")
            if s == 0:
                ax.set_ylabel("|L|_F" if quantity == "charge" else "|L| / (|W| |P|)")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    handles = [Line2D([], [], color=c, lw=1.4) for c in colours]
    handles += [Line2D([], [], color="k", lw=1.4), Line2D([], [], color="k", lw=0.9, ls="--")]
    labels = [r.label for r in runs] + ["median over heads", "max over heads"]
    check_labels(labels)
    fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize="small")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    try:
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)


class _quiet_nan_warnings:
    """nanmedian/nanmax warn on all-NaN slices (a sector whose charges are all 0)."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def summary_lines(runs: list[RunCharges]) -> list[str]:
    """Last logged step per run: median and max over layers and heads, per sector."""
    out = [note for r in runs for note in r.notes]
    for r in runs:
        last = r.values[-1]
        parts = [
            f"{SECTOR_NAMES[s]} median {np.nanmedian(last[..., i]):.3g} max "
            f"{np.nanmax(last[..., i]):.3g}"
            for i, s in enumerate(SECTOR_NAMES)
        ]
        out.append(f"{r.label} at step {int(r.steps[-1])}: " + "; ".join(parts))
    return out


def plot_noether(
    run_dirs: list[Path] | list[str], out: Path | str, quantity: str = "charge"
) -> list[RunCharges]:
    """Read each run's ``noether.csv`` and draw the overlaid charges to ``out`` (.png, .pdf or
    .svg); the runs' charges come back for :func:`summary_lines`. What ``symbreak noether``
    does.

    >>> from symbreak.analysis.noether_plot import plot_noether, summary_lines
    >>> runs = plot_noether(["runs/ecd", "runs/adamw"], "charges.png")  # doctest: +SKIP
    >>> print("\\n".join(summary_lines(runs)))  # doctest: +SKIP
    """
    require_matplotlib("symbreak noether draws")
    out = Path(out)
    supported = {"png", "pdf", "svg"}
    if out.suffix.lstrip(".").lower() not in supported:
        raise SymbreakError(f"--out {out}: the file must end in .png, .pdf or .svg")
    if quantity not in QUANTITIES:
        raise SymbreakError(f"--quantity {quantity!r} is not one of {', '.join(QUANTITIES)}")
    seen: dict[Path, str] = {}
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            raise SymbreakError(f"{d} is given twice (as {seen[key]} too); name each run once")
        seen[key] = str(d)
    runs = [load_run(d, quantity) for d in run_dirs]
    _unique_labels(runs)
    plot(runs, out, quantity)
    return runs
