"""Runs -> records: what ``symbreak report`` knows about each run, read from its own files.

A record holds a run's resolved config, its validation curve from ``metrics.csv`` (the rows
with a ``val_loss``: the fixed held-out set, never a single batch) and the figures the report
aggregates. Runs are grouped into *cells* (config minus the seed) and labelled with a *panel*
and a *variant*: from the sweep manifest when the runs come from ``symbreak sweep``, otherwise
from what differs between them (the ``sb.*`` settings make the variant, any other differing
keys the panel).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symbreak.errors import ExperimentError, SymbreakError
from symbreak.experiments.cells import MANIFEST, checkpoint_step, identity, read_manifest
from symbreak.outputs import portable_path
from symbreak.train.checkpoint import LATEST, resolve_checkpoint
from symbreak.train.metrics import read_metrics

SEED_KEYS = ("train.seed", "sb.seed")
# Keys that define the held-out measurement: runs that differ here have incomparable losses.
MEASUREMENT_KEYS = (
    "data.source",
    "model.block_size",
    "model.vocab_size",
    "train.eval_tokens",
    "train.eval_windows",
)
# Keys that may differ between runs of one cell without making them different experiments.
IGNORED_KEYS = (
    "train.max_steps",
    "train.max_tokens",
    "train.eval_every",
    "train.log_every",
    "train.compile",
    "train.dtype",
    "train.micro_batch_size",
    "train.skip_nonfinite",
)


@dataclass
class Record:
    run_dir: Path
    config: dict[str, Any]  # flattened, resolved
    seed: int
    steps: list[int]
    tokens: list[int]
    val_loss: list[float]
    tok_per_s: float
    panel: str = ""
    variant: str = ""
    eval: dict[str, float] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # per validation row: metrics.csv's exact_match (addition runs), None where not logged
    exact_match: list[float | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def final_val_loss(self) -> float:
        return self.val_loss[-1]

    @property
    def final_step(self) -> int:
        return self.steps[-1]

    @property
    def final_tokens(self) -> int:
        return self.tokens[-1]

    @property
    def best(self) -> tuple[float, int]:
        """(lowest fixed-set val loss, its step); ties: the earlier step."""
        i = min(range(len(self.val_loss)), key=lambda j: (self.val_loss[j], j))
        return self.val_loss[i], self.steps[i]

    @property
    def has_biases(self) -> bool:
        return any(self.config.get(f"sb.{k}") for k in ("q", "k", "v"))

    def to_json(self, base: Path | None = None) -> dict[str, Any]:
        """The run's figures; ``run_dir`` relative to ``base`` (see :func:`portable_path`)."""
        best, best_step = self.best
        return {
            "run_dir": portable_path(self.run_dir, base),
            "panel": self.panel,
            "variant": self.variant,
            "seed": self.seed,
            "final_val_loss": self.final_val_loss,
            "final_step": self.final_step,
            "best_val_loss": best,
            "best_step": best_step,
            "tokens": self.final_tokens,
            "tok_per_s": self.tok_per_s,
            "eval": self.eval,
        }


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v


def load_record(run_dir: Path) -> Record:
    """One run's record; a run without validation rows is an error naming it."""
    from symbreak.runs import load_run_config

    cfg = load_run_config(run_dir)
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise ExperimentError(f"{run_dir} has no metrics.csv; train it first")
    try:
        rows = read_metrics(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ExperimentError(f"{path} is unreadable ({e})") from None
    steps, tokens, losses, speeds, exact = [], [], [], [], []
    for row in rows:
        v = _float(row.get("val_loss", ""))
        s = _float(row.get("tok_per_s", ""))
        if s is not None and math.isfinite(s) and s > 0:
            speeds.append(s)
        if v is None:
            continue
        steps.append(int(row["step"]))
        tokens.append(int(row["tokens"]))
        losses.append(v)
        exact.append(_float(row.get("exact_match", "")))
    if not losses:
        raise ExperimentError(
            f"{run_dir} has no validation rows in metrics.csv (val_loss is empty in every row); "
            "a report needs runs that measured validation loss"
        )
    flat = identity(cfg)
    return Record(
        run_dir=run_dir,
        config=flat,
        seed=int(flat["train.seed"]),
        steps=steps,
        tokens=tokens,
        val_loss=losses,
        tok_per_s=statistics.median(speeds) if speeds else float("nan"),
        exact_match=exact,
    )


@dataclass
class Collection:
    records: list[Record]
    source: str  # "sweep" or "runs"
    variant_axis: str
    baseline: str | None
    skipped: list[str]
    sweep_dir: Path | None = None
    title: str = ""


def collect(paths: list[Path], baseline: str | None = None) -> Collection:
    """Sweep directories and/or run directories -> labelled records."""
    if len(paths) == 1 and (paths[0] / MANIFEST).is_file():
        return _from_sweep(paths[0], baseline)
    records, skipped = [], []
    for p in paths:
        if (p / MANIFEST).is_file():
            raise ExperimentError(
                f"{p} is a sweep; report one sweep at a time, or pass its run directories"
            )
        if not p.is_dir():
            raise ExperimentError(f"{p} does not exist; pass a sweep or run directory")
        if not (p / "config.toml").is_file():
            raise ExperimentError(
                f"{p} is neither a sweep (no {MANIFEST}) nor a run (no config.toml)"
            )
        if not _run_finished(p):  # a killed run's last loss is not comparable with others'
            skipped.append(p.name)
            continue
        records.append(load_record(p))
    if not records:
        raise ExperimentError(
            f"none of the {len(paths)} run(s) has finished its train.max_steps "
            f"({', '.join(skipped[:5])}); resume them (the same train command) first"
        )
    _check_comparable(records)
    _label_by_difference(records)
    return Collection(
        records,
        "runs",
        "sb",
        _baseline(records, baseline),
        skipped,
        title=", ".join(r.name for r in records[:4]) + (" ..." if len(records) > 4 else ""),
    )


def _from_sweep(sweep_dir: Path, baseline: str | None) -> Collection:
    manifest = read_manifest(sweep_dir)
    grid = manifest.get("grid", {})
    axes = grid.get("axes", [])
    report = grid.get("report", {})
    variant_axis = report.get("variant_axis") or _guess_variant_axis(axes)
    seed_axes = {a["name"] for a in axes if a.get("key") == "train.seed"}
    records, skipped = [], []
    for entry in manifest.get("cells", []):
        run_dir = sweep_dir / entry["name"]
        if not _finished(run_dir, entry):
            skipped.append(entry["name"])
            continue
        rec = load_record(run_dir)
        rec.labels = dict(entry.get("labels", {}))
        rec.variant = rec.labels.get(variant_axis, "all") if variant_axis else "all"
        panel = [v for k, v in rec.labels.items() if k != variant_axis and k not in seed_axes]
        rec.panel = "-".join(panel) or "all"
        records.append(rec)
    if not records:
        raise ExperimentError(
            f"sweep {sweep_dir} has no finished cell yet ({len(skipped)} unfinished); "
            "run the sweep first"
        )
    _check_comparable(records)
    chosen = baseline or report.get("baseline")
    return Collection(
        records,
        "sweep",
        variant_axis or "variant",
        _baseline(records, chosen),
        skipped,
        sweep_dir,
        title=grid.get("name", sweep_dir.name),
    )


def _run_finished(run_dir: Path) -> bool:
    """A loose run directory whose latest checkpoint reached the run's step budget."""
    from symbreak.runs import load_run_config

    try:
        total = load_run_config(run_dir).total_steps
        step = checkpoint_step(run_dir)
    except SymbreakError:
        return False
    return step is not None and step >= total


def _finished(run_dir: Path, entry: dict[str, Any]) -> bool:
    total = entry.get("total_steps")
    if not isinstance(total, int):
        return False
    try:
        step = checkpoint_step(run_dir)
    except SymbreakError:
        return False
    return step is not None and step >= total


def _guess_variant_axis(axes: list[dict[str, Any]]) -> str | None:
    """The axis whose variants set sb.* keys; else the first variant axis."""
    for a in axes:
        if a.get("kind") == "variants" and any(
            k.startswith("sb.") for s in a.get("settings", {}).values() for k in s
        ):
            return a["name"]
    return next((a["name"] for a in axes if a.get("kind") == "variants"), None)


def _check_comparable(records: list[Record]) -> None:
    first = records[0]
    for r in records[1:]:
        for key in MEASUREMENT_KEYS:
            if r.config.get(key) != first.config.get(key):
                raise ExperimentError(
                    f"{first.name} and {r.name} measure validation loss on different held-out "
                    f"sets ({key} {first.config.get(key)!r} vs {r.config.get(key)!r}); a report "
                    "compares runs with the same data, context and eval set"
                )


def sb_label(cfg: dict[str, Any]) -> str:
    """``sym``, ``bQ``, ``bQ+bV`` ... from a flattened config (mode and mean_V when not default;
    ``bQx4`` for 4 bQ components, ``(mQ=0)`` for the zero-mean control)."""
    parts = [
        f"b{k.upper()}" + (f"x{n}" if (n := cfg.get(f"sb.{k}_components", 1)) > 1 else "")
        for k in ("q", "k", "v")
        if cfg.get(f"sb.{k}")
    ]
    if not parts:
        return "sym"
    label = "+".join(parts)
    if cfg.get("sb.q") and cfg.get("sb.q_mean", 0.5) == 0:
        label += "(mQ=0)"
    if cfg.get("sb.v") and cfg.get("sb.v_mean"):
        label += f"(mV={cfg['sb.v_mean']:g})"
    if cfg.get("sb.mode", "batch") != "batch":
        label += f"[{cfg['sb.mode']}]"
    return label


def _label_by_difference(records: list[Record]) -> None:
    keys = sorted(set().union(*(r.config for r in records)))
    differing = [
        k
        for k in keys
        if k not in SEED_KEYS
        and k not in IGNORED_KEYS
        and len({json.dumps(r.config.get(k), sort_keys=True) for r in records}) > 1
    ]
    sb_keys = [k for k in differing if k.startswith("sb.")]
    other = [k for k in differing if not k.startswith("sb.")]
    for r in records:
        r.variant = sb_label(r.config)
        r.panel = ", ".join(f"{k}={_short(r.config.get(k))}" for k in other) or "all"
    # Different sb settings must not share a label.
    by_label: dict[str, set[str]] = {}
    for r in records:
        by_label.setdefault(r.variant, set()).add(
            json.dumps({k: r.config.get(k) for k in sb_keys}, sort_keys=True)
        )
    for r in records:
        if len(by_label[r.variant]) > 1:
            extra = [
                k for k in sb_keys if k not in ("sb.q", "sb.k", "sb.v", "sb.v_mean", "sb.mode")
            ]
            r.variant += "(" + ",".join(f"{k[3:]}={_short(r.config.get(k))}" for k in extra) + ")"


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _baseline(records: list[Record], chosen: str | None) -> str | None:
    variants = list(dict.fromkeys(r.variant for r in records))
    if chosen is not None:
        if chosen not in variants:
            raise ExperimentError(
                f"--baseline '{chosen}' is not a variant here; variants: {', '.join(variants)}"
            )
        return chosen
    plain = [v for v in variants if not any(r.has_biases for r in records if r.variant == v)]
    # Exactly one variant without biases is the natural baseline; several (a learning-rate
    # sweep, say) leave nothing to compare against unless --baseline names one.
    return plain[0] if len(plain) == 1 else None


def attach_eval(records: list[Record], echo: Any = print) -> None:
    """Puzzle-suite figures of each run's latest checkpoint (``symbreak eval``'s own JSON,
    computed now with :func:`~symbreak.eval.evaluate_run` where it does not exist yet)."""
    for r in records:
        try:
            ckpt = resolve_checkpoint(r.run_dir, LATEST)
        except SymbreakError as e:
            raise ExperimentError(f"--eval: {r.name}: {e}") from None
        path = r.run_dir / "eval" / f"{ckpt.name}.json"
        data = _read_eval(path)
        if data is None:
            from symbreak.eval.evaluate import evaluate_run

            echo(f"evaluating {r.name} at {ckpt.name} ...")
            try:
                result = evaluate_run(r.run_dir, checkpoint=LATEST)  # writes ``path``
            except SymbreakError as e:
                raise ExperimentError(f"--eval: symbreak eval {r.run_dir} failed: {e}") from None
            data = _eval_figures(result.data)
            if data is None:
                raise ExperimentError(f"--eval: symbreak eval {r.run_dir} scored no items")
        r.eval = data


def attach_cot_eval(records: list[Record], echo: Any = print) -> None:
    """``cot-arithmetic`` figures of each fine-tuned run's latest checkpoint: ``symbreak eval
    --task cot-arithmetic``'s own JSON, computed now where it does not exist yet."""
    from symbreak.data.cot import KINDS, SOURCE

    for r in records:
        if r.config.get("data.source") != SOURCE:
            raise ExperimentError(
                f"--task {SOURCE}: {r.name} was not fine-tuned on {SOURCE} (data.source="
                f"{r.config.get('data.source')}); report the fine-tuning sweep"
            )
        from symbreak.eval.evaluate import evaluate_cot_run, existing_cot_eval

        done = existing_cot_eval(r.run_dir, LATEST, None, 0, None)  # all problems, zero-shot
        if done is not None:
            data = done.data
        else:
            echo(f"evaluating {r.name} on {SOURCE} ...")
            try:
                data = evaluate_cot_run(r.run_dir, checkpoint=LATEST).data
            except SymbreakError as e:
                raise ExperimentError(f"--task {SOURCE}: evaluating {r.run_dir}: {e}") from None
        acc = data["accuracy"]
        r.eval = {"cot_acc": float(acc["overall"]["mean"])}
        r.eval.update({f"cot_{k}": float(acc[k]["mean"]) if k in acc else math.nan for k in KINDS})
        r.eval["cot_logprob"] = float(data["chain_logprob"]["overall"]["mean"])


def _read_eval(path: Path) -> dict[str, float] | None:
    try:
        return _eval_figures(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _eval_figures(data: Any) -> dict[str, float] | None:
    """The built-in suite's headline figures, or None for any other suite's results (a report
    column never mixes suites)."""
    try:
        options = data.get("options", {})
        if options.get("suite", "builtin") != "builtin" or options.get("puzzles"):
            return None
        overall = data["overall"]
        return {
            "macro_acc": float(overall["acc"]["macro"]["mean"]),
            "answer_ce": float(overall["answer_ce"]["macro"]["mean"]),
        }
    except (ValueError, KeyError, TypeError):
        return None
