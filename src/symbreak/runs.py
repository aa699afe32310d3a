"""Load exactly the model a run trained, from its run directory, or fail loudly.

The paper's evaluator silently dropped trained weights when loading; here every step is
strict: the config comes from the run's own ``config.toml`` (and must agree with the config
stored in the checkpoint's ``state.json``, when it has one), and the weights are loaded with
:func:`~symbreak.train.checkpoint.load_model_weights` (every tensor present, no extras, same
shapes). Anything else is a :class:`~symbreak.errors.CheckpointError` saying what differs.

Checkpoints: ``latest`` (what ``checkpoints/latest`` names), a step number, or ``best``: the
checkpoint whose ``state.json`` records the lowest ``val_loss`` among those present (NaN or
missing values are skipped; on a tie the later step wins). ``val_loss`` in ``state.json`` is
the validation loss measured when that checkpoint was written.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from symbreak.config import SB_EVAL_CHOICES, Config
from symbreak.data import GPT2_VOCAB_SIZE, GPT2Tokenizer, cot_tokenizer, data_tokenizer
from symbreak.data.cot import SOURCE as COT_SOURCE
from symbreak.data.tokenizer import Tokenizer
from symbreak.device import resolve_device
from symbreak.errors import CheckpointError, ConfigError, SymbreakError
from symbreak.model import GPT
from symbreak.train.checkpoint import (
    LATEST,
    load_model_weights,
    read_state,
    resolve_checkpoint,
    step_dir_name,
)
from symbreak.train.checkpoint import best_checkpoint as train_best_checkpoint


@dataclass
class Run:
    """A loaded run: its config (with ``sb.eval`` as used), the model in eval mode, and the
    checkpoint it came from."""

    run_dir: Path
    cfg: Config
    model: GPT
    checkpoint: Path
    step: int
    state: dict[str, Any]
    device: torch.device

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def tokenizer(self) -> Tokenizer:
        """GPT-2 BPE for a GPT-2-sized vocabulary (no data needed); otherwise the tokenizer
        stored with the run's data (a character-level vocabulary)."""
        if self.cfg.model.vocab_size >= GPT2_VOCAB_SIZE:
            return GPT2Tokenizer()
        if self.cfg.data.source == COT_SOURCE:  # fine-tuned: the vocabulary it was given
            return cot_tokenizer(self.cfg.data)
        cache = Path(self.cfg.data.cache_dir) if self.cfg.data.cache_dir else None
        return data_tokenizer(self.cfg.data.source, cache)

    def require_gpt2(self, what: str) -> None:
        """Refuse GPT-2-text tools (the puzzle suite) on a run with another tokenizer."""
        name = self.tokenizer.name
        if name != GPT2Tokenizer.name:
            raise SymbreakError(
                f"{what} is GPT-2 BPE text, but {self.run_dir} is a {name}-level run "
                f"(model.vocab_size {self.cfg.model.vocab_size}); use `symbreak eval --val "
                "--suite none` for its validation loss"
            )

    @property
    def recorded_val_loss(self) -> float | None:
        v = self.state.get("val_loss")
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def load_run_config(run_dir: Path) -> Config:
    """The resolved config of a run, from ``<run_dir>/config.toml``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(
            f"{run_dir} is a file, not a run directory; pass the directory that training wrote "
            "(train.out_dir/train.name)"
        )
    if not run_dir.is_dir():
        raise CheckpointError(
            f"run directory {run_dir} does not exist; pass the directory that training wrote "
            "(train.out_dir/train.name)"
        )
    path = run_dir / "config.toml"
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} is not a run directory (no config.toml); pass the directory that "
            "training wrote (train.out_dir/train.name)"
        )
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); restore the run's config") from None
    return Config.from_dict(tree, origin=str(path))


def _step_of(ckpt: Path) -> int:
    try:
        return int(ckpt.name.removeprefix("step_"))
    except ValueError:
        raise CheckpointError(f"checkpoint directory {ckpt} is not named step_NNNNNNNN") from None


def best_checkpoint(run_dir: Path) -> Path:
    """The complete checkpoint with the lowest recorded ``val_loss`` (ties: the later step)."""
    best = train_best_checkpoint(run_dir)
    if best is None:
        raise CheckpointError(
            f"{run_dir} has no complete checkpoint with a recorded val_loss; use "
            "--checkpoint latest or a step number"
        )
    return best


def find_checkpoint(run_dir: Path, which: str = LATEST) -> Path:
    """``latest``, ``best`` or a step number -> the checkpoint directory."""
    if which == "best":
        return best_checkpoint(run_dir)
    if which != LATEST and not which.isdigit():
        raise CheckpointError(f"--checkpoint '{which}' is not latest, best or a step number")
    root = Path(run_dir) / "checkpoints"
    if which != LATEST and not (root / step_dir_name(int(which))).is_dir():
        steps = sorted(int(d.name[5:]) for d in root.glob("step_*") if d.name[5:].isdigit())
        raise CheckpointError(
            f"{run_dir} has no checkpoint at step {int(which)}; it has steps "
            f"{', '.join(map(str, steps)) or 'none'}"
        )
    return resolve_checkpoint(Path(run_dir), which)


def _check_same_model(cfg: Config, state: dict[str, Any], ckpt: Path) -> None:
    """config.toml and the checkpoint's own config must describe the same model."""
    tree = state.get("config")
    if not isinstance(tree, dict):
        return  # checkpoints written without a config: the strict weight check still applies
    try:
        saved = Config.from_dict(tree, origin=f"{ckpt}/state.json").to_dict()
    except ConfigError as e:
        raise CheckpointError(f"{ckpt}/state.json holds an unreadable config: {e}") from None
    ours = cfg.to_dict()
    for section in ("model", "sb"):
        for key, value in saved[section].items():
            if ours[section].get(key) != value:
                raise CheckpointError(
                    f"config.toml says {section}.{key}={ours[section].get(key)!r} but checkpoint "
                    f"{ckpt.name} was trained with {value!r}; restore the run's config.toml"
                )


def load_run(
    run_dir: str | Path,
    checkpoint: str = LATEST,
    sb_eval: str | None = None,
    device: str | torch.device = "cpu",
) -> Run:
    """Build the run's GPT from its config and load a checkpoint's weights strictly.

    ``sb_eval`` overrides the run's ``sb.eval`` (how evaluation treats the symmetry-breaking
    biases: their ``mean``, a fresh ``sample`` per forward, ``zero``, or with several components
    their ``mixture``).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    ckpt = find_checkpoint(run_dir, checkpoint)
    state = read_state(ckpt)
    _check_same_model(cfg, state, ckpt)
    if sb_eval is not None:
        if sb_eval not in SB_EVAL_CHOICES:
            raise SymbreakError(f"--sb-eval '{sb_eval}' is not one of {', '.join(SB_EVAL_CHOICES)}")
        cfg.sb.eval = sb_eval
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model = GPT(cfg.model, cfg.sb)
    load_model_weights(model, ckpt)
    model.to(dev).eval()
    return Run(run_dir, cfg, model, ckpt, _step_of(ckpt), state, dev)
