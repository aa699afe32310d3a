"""Fine-tuning a pretrained run on a task (``symbreak finetune``): a new run directory that
starts from the source run's latest checkpoint (``model.init_from``) and trains on the task's
chain and answer tokens only.

The fine-tuning run is an ordinary training run (resumable bit for bit, locked, logged,
checkpointed, bf16 and DDP as any), whose config is the source run's with:

* ``model.*`` and ``sb.*`` kept (the same network and symmetry breaking), ``model.init_from``
  set to the source run;
* ``data.source=cot-arithmetic`` with ``data.cot_train`` examples, ``data.cot_epochs`` epochs,
  and the source run's vocabulary (``data.cot_vocab``: GPT-2, or its character-level data);
* the optimizer :data:`FINETUNE_DEFAULTS`: AdamW at lr 3e-4 with 2% linear warm-up and a
  cosine decay to 10%, weight decay 0.1, gradient clipping at 1.0, batch 16 (overridable);
* ``train.max_steps`` = ceil(windows over all epochs / ``train.batch_size``), validation and a
  checkpoint once per epoch.

Why those defaults: the source runs differ in their pretraining optimizer (AdamW, SOAP, ECD,
SGDM), and fine-tuning all of them with one fixed optimizer keeps the comparison about the
pretrained weights. AdamW at 3e-4 is nanoGPT's fine-tuning scale for models of this size; the
warm-up keeps the first steps from wrecking pretrained features while Adam's moments settle,
and the cosine tail lets the last epoch converge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symbreak.config import Config, parse_override
from symbreak.data import load_run_data, resolve_config
from symbreak.data.cot import SOURCE as COT_SOURCE
from symbreak.errors import ConfigError, ExperimentError, SymbreakError
from symbreak.experiments.cells import checkpoint_step
from symbreak.experiments.grid import Axis, Cell, Grid
from symbreak.runs import load_run_config
from symbreak.train.trainer import RunSummary

TASKS = (COT_SOURCE,)
FINETUNE_DEFAULTS: dict[str, Any] = {
    "optim.name": "adamw",
    "optim.lr": 3e-4,
    "optim.weight_decay": 0.1,
    "optim.betas": [0.9, 0.95],
    "optim.schedule": "cosine",
    "optim.min_lr_ratio": 0.1,
    "optim.grad_clip": 1.0,
    "train.batch_size": 16,
    "train.micro_batch_size": 0,
}
WARMUP_SHARE = 0.02


def finetune_config(
    source: str | Path,
    task: str = COT_SOURCE,
    examples: int | None = None,
    epochs: int | None = None,
    out: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """The resolved config of fine-tuning the finished run ``source`` on ``task``. ``out`` is
    the new run directory (default ``<source>-<task>`` beside the source). Every mistake is one
    :class:`~symbreak.errors.SymbreakError` line, raised before anything is written."""
    if task not in TASKS:
        raise SymbreakError(f"--task {task!r} is not a fine-tuning task; known: {', '.join(TASKS)}")
    if epochs is not None and epochs < 1:
        raise SymbreakError(f"--epochs must be at least 1, got {epochs}")
    if examples is not None and examples < 1:
        raise SymbreakError(f"--examples must be at least 1, got {examples}")
    src = Path(source)
    if not src.exists():
        raise SymbreakError(f"source run {src} does not exist; pass a finished run directory")
    src_cfg = load_run_config(src)
    step = checkpoint_step(src)
    if step is None or step < src_cfg.total_steps:
        raise SymbreakError(
            f"source run {src} is unfinished (checkpoint at step {step or 0} of "
            f"{src_cfg.total_steps}); finish it first (run its train command again)"
        )
    if src_cfg.data.source == COT_SOURCE:
        raise SymbreakError(f"{src} is already a {COT_SOURCE} fine-tuning run; pass its source")
    cfg = Config.from_tree(src_cfg.to_dict())
    out_dir = Path(out) if out is not None else src.parent / f"{src.name}-{task}"
    try:
        for key, value in FINETUNE_DEFAULTS.items():
            cfg.set(key, value)
        cfg.set("model.init_from", str(src.resolve()))
        cfg.set("data.source", task)
        cfg.set("data.cot_vocab", _vocab_of(src_cfg, src))
        if examples is not None:
            cfg.set("data.cot_train", examples)
        if epochs is not None:
            cfg.set("data.cot_epochs", epochs)
        cfg.set("train.out_dir", str(out_dir.parent))
        cfg.set("train.name", out_dir.name)
        cfg.set("train.max_tokens", 0)
        cfg.set("train.max_steps", 1)  # set from the epochs below
        for item in overrides:
            cfg.set(*parse_override(item))
        cfg = resolve_config(cfg)
    except ConfigError as e:
        raise SymbreakError(str(e)) from None
    if cfg.data.cot_train < cfg.train.batch_size:
        raise SymbreakError(
            f"--examples {cfg.data.cot_train} is fewer than one batch (train.batch_size="
            f"{cfg.train.batch_size}); use more examples or a smaller train.batch_size"
        )
    data = load_run_data(cfg)  # generates and tokenizes: a vocabulary problem fails here
    per_epoch = len(data.train)
    windows = data.train.windows_in_epochs(cfg.data.cot_epochs)
    steps = math.ceil(windows / cfg.train.batch_size)
    epoch_steps = max(1, math.ceil(per_epoch / cfg.train.batch_size))
    explicit = {parse_override(o)[0] for o in overrides}
    if "train.max_steps" not in explicit:
        cfg.train.max_steps = steps
    if "optim.warmup_steps" not in explicit:
        cfg.optim.warmup_steps = max(1, round(WARMUP_SHARE * cfg.train.max_steps))
    if "train.eval_every" not in explicit:
        cfg.train.eval_every = epoch_steps
    if "train.checkpoint_every" not in explicit:
        cfg.train.checkpoint_every = epoch_steps
    if "train.log_every" not in explicit:
        cfg.train.log_every = max(1, min(cfg.train.log_every, epoch_steps))
    return resolve_config(cfg)


def _vocab_of(src_cfg: Config, src: Path) -> str:
    """``data.cot_vocab`` for a source run: GPT-2, or its own character-level data."""
    from symbreak.data import data_tokenizer
    from symbreak.data.loader import PADDED_GPT2_VOCAB

    if src_cfg.model.vocab_size >= PADDED_GPT2_VOCAB - 64:
        return "gpt2"
    cache = Path(src_cfg.data.cache_dir) if src_cfg.data.cache_dir else None
    tok = data_tokenizer(src_cfg.data.source, cache)
    if tok.name == "gpt2":
        return "gpt2"
    if tok.name != "char":
        raise SymbreakError(
            f"{src} uses the {tok.name!r} vocabulary of data.source={src_cfg.data.source} "
            f"({src_cfg.model.vocab_size} ids), which cannot write the {COT_SOURCE} task"
        )
    return src_cfg.data.source


def finetune_run(cfg: Config) -> RunSummary:
    """Train a config from :func:`finetune_config` (resuming a run found in its directory).

    Example::

        from symbreak.experiments.finetune import finetune_config, finetune_run
        cfg = finetune_config("runs/tiny-bq", examples=10000, epochs=5)
        print("\\n".join(finetune_run(cfg).lines()))
    """
    from symbreak.experiments.training import train_run

    return train_run(cfg)


# --------------------------------------------------------------------------------------------
# A pretraining sweep, fine-tuned cell by cell
# --------------------------------------------------------------------------------------------


@dataclass
class FinetuneGrid(Grid):
    """The fine-tuning sweep of a pretraining sweep: one cell per finished source cell, with
    the source cell's name and labels (so ``symbreak report`` groups and pairs the fine-tuned
    runs by the source's variants and seeds) and the config of :func:`finetune_config`."""

    source: Path = Path()
    fixed_cells: list[Cell] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        return list(self.fixed_cells)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "finetune_of": str(self.source), "skipped": self.skipped}


def finetune_grid(
    sweep_dir: str | Path,
    task: str = COT_SOURCE,
    examples: int | None = None,
    epochs: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> FinetuneGrid:
    """Every finished cell of the pretraining sweep ``sweep_dir`` as a cell of the sweep
    ``<sweep_dir>-<task>`` beside it; unfinished cells are left out (listed in ``skipped``).
    What ``symbreak sweep --finetune SWEEP_DIR`` runs, resumable like any sweep."""
    from symbreak.experiments.cells import read_manifest

    src = Path(sweep_dir)
    if not src.is_dir():
        raise ExperimentError(f"--finetune {src}: no such sweep directory")
    try:
        manifest = read_manifest(src)
    except SymbreakError as e:
        raise ExperimentError(f"--finetune {src}: {e}") from None
    grid_json = manifest.get("grid", {})
    if grid_json.get("finetune_of"):
        raise ExperimentError(f"--finetune {src} is itself a fine-tuning sweep; pass its source")
    axes = [
        Axis(a["name"], a["kind"], list(a["values"]), dict(a["settings"]), a.get("key"))
        for a in grid_json.get("axes", [])
    ]
    out = FinetuneGrid(
        name=f"{src.name}-{task}",
        out_dir=src.parent,
        path=None,
        axes=axes,
        base_keys={},
        base_file=None,
        report=dict(grid_json.get("report", {})),
        overrides=list(overrides),
        source=src,
    )
    for entry in manifest.get("cells", []):
        name = entry["name"]
        run_dir = src / name
        try:
            cfg = finetune_config(run_dir, task, examples, epochs, out.sweep_dir / name, overrides)
        except SymbreakError as e:
            if "unfinished" in str(e) or "does not exist" in str(e):
                out.skipped.append(name)
                continue
            raise ExperimentError(f"--finetune: cell '{name}': {e}") from None
        out.fixed_cells.append(Cell(name, dict(entry.get("labels", {})), {}, cfg))
    if not out.fixed_cells:
        raise ExperimentError(
            f"--finetune {src}: no finished cell to fine-tune ({len(out.skipped)} unfinished); "
            "run the pretraining sweep first"
        )
    return out
