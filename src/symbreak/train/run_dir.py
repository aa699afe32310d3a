"""A run directory's life outside the loop: refusing a path that cannot hold a run, and
removing what a failed attempt without a checkpoint left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from symbreak.config import Config
from symbreak.errors import ConfigError
from symbreak.train.lock import LOCK_FILE

# Each start or resume of a run appends an entry here: see symbreak.provenance.
PROVENANCE_FILE = "provenance.json"

# Files a training attempt writes into its run directory besides checkpoints/. A fresh start
# (no checkpoint to resume from) removes those a failed earlier attempt left behind, so nothing
# of that attempt (metrics.csv rows, TensorBoard events, the W&B run id) mixes into this one.
ATTEMPT_FILES = (
    "metrics.csv",
    "noether.csv",
    "config.toml",
    PROVENANCE_FILE,
    "tensorboard",
    "wandb_id.json",
)


def check_run_dir(cfg: Config) -> Path:
    """``<train.out_dir>/<train.name>``, refused before anything is written if a file is in the
    way or the directory cannot be created."""
    out, run_dir = Path(cfg.train.out_dir), Path(cfg.train.out_dir) / cfg.train.name
    for key, path in (("train.out_dir", out), ("train.name", run_dir)):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"{key}: {path} is a file, not a directory; runs are written to "
                "train.out_dir/train.name: choose another train.out_dir or train.name"
            )
    parent = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"train.out_dir: {parent} is a file, so {run_dir} cannot be created")
    if not _writable(parent):
        raise ConfigError(
            f"train.out_dir: cannot write into {parent} (permission denied); choose another "
            "train.out_dir"
        )
    return run_dir


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def only_lock(run_dir: Path) -> bool:
    """The directory holds nothing but the lock file (this process just created it)."""
    return all(p.name == LOCK_FILE for p in run_dir.iterdir())


def clear_attempt(run_dir: Path, remove_dir: bool = False) -> bool:
    """Remove what a training attempt without a checkpoint wrote (see :data:`ATTEMPT_FILES`,
    and ``checkpoints/`` when it holds no complete checkpoint); with ``remove_dir``, also the
    directory itself when nothing else is left. Returns whether anything was removed."""
    if not run_dir.is_dir():
        return False
    removed = False
    for name in ATTEMPT_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed = True
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed = True
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and not any(p.name.startswith("step_") for p in ckpts.iterdir()):
        shutil.rmtree(ckpts, ignore_errors=True)  # only temporary leftovers of a killed write
    if remove_dir and all(p.name == LOCK_FILE for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
    return removed
