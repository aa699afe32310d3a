"""``symbreak sweep``: run every cell of a grid, resumably, and keep a manifest.

Every cell is an ordinary run directory ``<out_dir>/<sweep>/<cell>/`` trained by ``symbreak
train`` in a child process, so everything the trainer promises (exact resume, checkpoints on
SIGTERM, clear errors) holds per cell. The sweep adds:

* **State from the run directories**, never from memory: a cell is ``done`` when its latest
  checkpoint has reached the cell's step budget, ``partial`` when it has an earlier checkpoint
  (the trainer resumes it bit-exactly), ``pending`` otherwise. Running the same command again
  therefore skips finished cells and resumes interrupted ones.
* **Identity checks**: a cell that has a checkpoint was trained with some config; if the grid
  now gives that cell another config (other than operational keys such as progress bars or
  checkpoint cadence), the sweep stops before running anything and names the cell and the key.
  Adding seeds or variants only adds cells.
* **The manifest** ``<sweep>/sweep.json``: the grid (axes, settings), every cell with its
  labels, resolved config and state, written atomically at every change. Cells dropped from the
  grid stay listed (``in_grid: false``) so no trained run is forgotten.
* Bookkeeping under ``<sweep>/.sweep/``: ``configs/<cell>.toml`` (what the child trains),
  ``logs/<cell>.log`` (its output), ``submitit/`` (cluster jobs).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from symbreak import __version__
from symbreak.atomic import write_text_atomic
from symbreak.config import Config, flatten
from symbreak.errors import CheckpointError, ConfigError, ExperimentError
from symbreak.experiments.grid import Cell, Grid
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
    step = checkpoint_step(run_dir_of(cell))
    if step is None:
        return CellState("pending", 0, total)
    return CellState("done" if step >= total else "partial", step, total)


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
                    "run_dir": str(run_dir_of(c)),
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
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
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


def plan_lines(grid: Grid, cells: list[Cell], states: dict[str, CellState]) -> list[str]:
    """What would run: one line per cell with its state and the settings its axes give."""
    width = max(len(c.name) for c in cells)
    lines = [
        f"sweep {grid.name}: {len(cells)} cells in {grid.sweep_dir} "
        f"({', '.join(f'{a.name} x{len(a.values)}' for a in grid.axes) or 'no axes'})"
    ]
    for c in cells:
        st = states[c.name]
        what = {"done": "skip (done)", "partial": f"resume at step {st.step}", "pending": "run"}
        settings = " ".join(f"{k}={v}" for k, v in c.settings.items())
        lines.append(
            f"  {c.name.ljust(width)}  {what[st.state]:<22} {st.total} steps  {settings}".rstrip()
        )
    return lines


def run_sweep(
    grid: Grid,
    jobs: int = 1,
    executor: str = "local",
    dry_run: bool = False,
    wait: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run (or, with ``dry_run``, describe) every unfinished cell; return an exit code."""
    cells = grid.cells()
    for cell in cells:
        check_identity(cell)  # every check before anything is written or started
    try:
        states = {c.name: cell_state(c) for c in cells}
    except CheckpointError as e:
        raise ExperimentError(str(e)) from None
    todo = [c for c in cells if states[c.name].state != "done"]
    if dry_run:
        for line in plan_lines(grid, cells, states):
            echo(line)
        if executor != "local":
            from symbreak.experiments.cluster import submission_parameters

            params = submission_parameters(grid, executor)
            echo(f"submitit {executor} parameters: {json.dumps(params, sort_keys=True)}")
        echo(f"dry run: {len(todo)} of {len(cells)} cells would run; nothing was started")
        return 0
    manifest = Manifest(grid, cells, executor)
    manifest.write()
    if not todo:
        echo(f"sweep {grid.name}: all {len(cells)} cells are done ({grid.sweep_dir})")
        return 0
    echo(
        f"sweep {grid.name}: {len(todo)} of {len(cells)} cells to run "
        f"({len(cells) - len(todo)} done) in {grid.sweep_dir}"
    )
    configs = {c.name: prepare_cell(c, grid.sweep_dir) for c in todo}
    start = time.perf_counter()
    if executor == "local":
        from symbreak.experiments.local import run_local

        failed = run_local(grid, todo, configs, jobs, manifest, echo)
    else:
        from symbreak.experiments.cluster import submit

        failed = submit(grid, todo, configs, executor, manifest, wait, echo)
        if failed is None:
            return 0  # submitted, not waited for
    manifest.write({n: "failed" for n in failed})
    elapsed = time.perf_counter() - start
    if failed:
        for name in failed:
            echo(f"  failed: {name}: {manifest.extra[name].get('error', '')}")
        raise ExperimentError(
            f"{len(failed)} of {len(todo)} cells failed (logs in "
            f"{grid.sweep_dir / BOOKKEEPING / 'logs'}); the others are intact: fix the cause "
            "and run the same command to retry only what is unfinished"
        )
    echo(
        f"sweep {grid.name}: {len(todo)} cell(s) finished in {elapsed:,.0f} s; "
        f"manifest {manifest.path}"
    )
    return 0


def default_threads(jobs: int, procs: int = 1) -> int:
    """torch threads per child process: the cores this process may use, split evenly."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, jobs * procs))
