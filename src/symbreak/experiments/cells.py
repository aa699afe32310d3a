"""A sweep's cells on disk: their state read from the run directories, the child command that
trains one, its log, and the manifest ``sweep.json``.

The executors (:mod:`~symbreak.experiments.local`, :mod:`~symbreak.experiments.cluster`) and
:func:`~symbreak.experiments.sweep.run_sweep` share these; nothing here starts a process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from symbreak import __version__
from symbreak.atomic import write_text_atomic
from symbreak.config import Config, flatten
from symbreak.errors import ConfigError, ExperimentError
from symbreak.experiments.grid import Cell, Grid
from symbreak.outputs import portable_path
from symbreak.provenance import provenance
from symbreak.train.checkpoint import LATEST, read_state, resolve_checkpoint
from symbreak.train.lock import describe_holder, is_locked, read_holder

MANIFEST = "sweep.json"
LOCK_GRACE_S = 15.0
BOOKKEEPING = ".sweep"
# Keys that change how a run is executed or logged, not what it computes: a grid may change
# them for a cell that already trained.
OPERATIONAL_KEYS = (
    "train.out_dir",
    "train.name",
    "train.progress",
    "train.tensorboard",
    "train.wandb",
    "train.resume",
    "train.keep_checkpoints",
    "train.checkpoint_every",
    "train.device",
    "train.threads",
    "data.cache_dir",
)


@dataclass
class CellState:
    state: str  # pending | partial | done
    step: int
    total: int
    busy: bool = False  # a trainer holds the run's lock now (this sweep's child or another's)


def run_dir_of(cell: Cell) -> Path:
    return Path(cell.config.train.out_dir) / cell.config.train.name


def identity(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """The flattened config without operational keys: what a cell *is*."""
    flat = flatten(cfg.to_dict() if isinstance(cfg, Config) else cfg)
    return {k: v for k, v in flat.items() if k not in OPERATIONAL_KEYS}


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of a run's latest complete checkpoint, or None when it has none."""
    if not (run_dir / "checkpoints" / LATEST).exists():
        return None
    return int(read_state(resolve_checkpoint(run_dir))["step"])


def cell_state(cell: Cell) -> CellState:
    total = cell.config.total_steps
    run_dir = run_dir_of(cell)
    step = checkpoint_step(run_dir)
    busy = is_locked(run_dir)
    if step is None:
        return CellState("pending", 0, total, busy)
    return CellState("done" if step >= total else "partial", step, total, busy)


def check_identity(cell: Cell) -> None:
    """Refuse a grid that would change what an already trained cell is."""
    run_dir = run_dir_of(cell)
    if not (run_dir / "checkpoints" / LATEST).exists():
        return
    ckpt = resolve_checkpoint(run_dir)
    stored = read_state(ckpt).get("config")
    if not isinstance(stored, dict):
        raise ExperimentError(f"cell '{cell.name}': {ckpt}/state.json holds no config")
    try:
        old = identity(Config.from_dict(stored, origin=str(ckpt)))
    except ConfigError as e:
        raise ExperimentError(f"cell '{cell.name}': its checkpoint's config: {e}") from None
    new = identity(cell.config)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise ExperimentError(
                f"cell '{cell.name}' in {run_dir} was trained with {key}={old.get(key)!r} but "
                f"the grid now gives {new.get(key)!r}; a trained cell cannot change: restore "
                "the grid, or give the sweep another name"
            )


def prepare_cell(cell: Cell, sweep_dir: Path) -> Path:
    """Write the config the child trains; clear leftovers of an attempt that never reached a
    checkpoint (so its metrics.csv rows cannot mix with the new attempt's)."""
    run_dir = run_dir_of(cell)
    deadline = time.monotonic() + LOCK_GRACE_S
    while is_locked(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)  # a trainer of a just-killed sweep may take a moment to die
    if is_locked(run_dir):
        raise ExperimentError(
            f"cell '{cell.name}' is being trained by another process "
            f"({describe_holder(read_holder(run_dir) or {})}); "
            "wait for it or stop it, then run the sweep again"
        )
    if run_dir.exists() and not (run_dir / "checkpoints" / LATEST).exists():
        shutil.rmtree(run_dir)
    path = sweep_dir / BOOKKEEPING / "configs" / f"{cell.name}.toml"
    cfg = Config.from_dict(cell.config.to_dict())
    cfg.train.progress = False  # the sweep draws progress; a child's bar would flood its log
    write_text_atomic(path, cfg.to_toml())
    return path


def log_path(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / BOOKKEEPING / "logs" / f"{name}.log"


def train_command(config_path: Path, procs: int) -> list[str]:
    """The child process: ``symbreak train -c CELL.toml``, under torchrun for procs > 1."""
    if procs > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={procs}",
            "-m",
            "symbreak",
            "train",
            "-c",
            str(config_path),
        ]
    return [sys.executable, "-m", "symbreak", "train", "-c", str(config_path)]


def last_error(path: Path) -> str:
    """The child's ``error:`` line, else its last non-empty line."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if ln.startswith("error:")]
    rest = [ln for ln in lines if ln]
    return (errors or rest or ["(empty log)"])[-1]


class Manifest:
    """``sweep.json``, rewritten atomically whenever a cell changes state."""

    def __init__(self, grid: Grid, cells: list[Cell], executor: str) -> None:
        self.grid, self.cells, self.executor = grid, cells, executor
        self.path = grid.sweep_dir / MANIFEST
        self.extra: dict[str, dict[str, Any]] = {c.name: {} for c in cells}
        self.retired: list[dict[str, Any]] = []
        old = read_manifest(grid.sweep_dir) if self.path.exists() else None
        if old:
            names = {c.name for c in cells}
            for entry in old.get("cells", []):
                if entry.get("name") in names:
                    kept = {k: entry[k] for k in ("job_id", "error") if k in entry}
                    self.extra[entry["name"]].update(kept)
                elif (grid.sweep_dir / entry.get("name", "")).is_dir():
                    self.retired.append({**entry, "in_grid": False})

    def note(self, name: str, **values: Any) -> None:
        self.extra[name].update(values)

    def write(self, states: dict[str, str] | None = None) -> None:
        states = states or {}
        entries = []
        for c in self.cells:
            st = cell_state(c)
            state = states.get(c.name) or st.state
            entries.append(
                {
                    "name": c.name,
                    "labels": c.labels,
                    "seed": c.seed,
                    "run_dir": portable_path(run_dir_of(c), self.path.parent),
                    "settings": c.settings,
                    "state": state,
                    "step": st.step,
                    "total_steps": st.total,
                    "in_grid": True,
                    **self.extra[c.name],
                    "config": c.config.to_dict(),
                }
            )
        data = {
            "format": 1,
            "symbreak_version": __version__,
            "provenance": provenance(),
            # a snapshot: a sweep killed outright leaves "running" behind; commands read the
            # cells' state from their run directories, never from here
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "writer_pid": os.getpid(),
            "executor": self.executor,
            "grid": self.grid.to_json(),
            "cells": entries + self.retired,
        }
        write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")


def read_manifest(sweep_dir: Path) -> dict[str, Any]:
    path = Path(sweep_dir) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExperimentError(f"{path} is unreadable ({e}); run the sweep again") from None
    if not isinstance(data, dict) or data.get("format") != 1:
        raise ExperimentError(f"{path} is not a symbreak sweep manifest")
    return data


def default_threads(jobs: int, procs: int = 1) -> int:
    """torch threads per child process: the cores this process may use, split evenly."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, jobs * procs))
