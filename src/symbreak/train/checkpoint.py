"""Checkpoints: safetensors for tensors, JSON for everything else; never pickle; atomic writes.

Layout::

    <run>/checkpoints/step_00000123/model.safetensors      model.state_dict()
                                    optimizer.safetensors  every tensor of optimizer.state_dict()
                                    state.json             step, tokens, config, the optimizer's
                                                           non-tensor tree, ...
    <run>/checkpoints/latest                               "step_00000123\\n"

A checkpoint is written into a hidden temporary directory, each file fsynced, then renamed into
place; ``latest`` is replaced atomically afterwards. An interrupted write leaves at most a
``.tmp-*`` directory that is never read, and ``latest`` always names a complete checkpoint.

The optimizer's ``state_dict()`` is a tree of dicts (with int keys), lists, tuples, numbers,
strings and tensors. :func:`encode_tree` turns it into JSON plus a flat ``{name: tensor}`` map
without losing key types, so ``load_state_dict`` gets back exactly what was saved.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from symbreak.atomic import apply_umask, fsync_dir, write_text_atomic
from symbreak.errors import CheckpointError

FORMAT_VERSION = 1
LATEST = "latest"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


# --------------------------------------------------------------------------------------------
# Tree <-> (JSON, tensors)
# --------------------------------------------------------------------------------------------


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: str = "t") -> Any:
    """JSON-able form of ``obj``; tensors are moved into ``tensors`` under unique names."""
    if torch.is_tensor(obj):
        tensors[path] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_encode_key(k), encode_tree(v, tensors, f"{path}.{k}")] for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def decode_tree(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(decode_tree(v, tensors) for v in obj["__tuple__"])
        return {k: decode_tree(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [decode_tree(v, tensors) for v in obj]
    return obj


def _encode_key(k: Any) -> Any:
    if isinstance(k, bool) or not isinstance(k, int | str):
        raise TypeError(f"unsupported dict key {k!r}")
    return k  # JSON keeps ints and strings apart inside a list


# --------------------------------------------------------------------------------------------
# Save
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` at it. Returns its directory.

    ``model_state`` / ``optimizer_state``, when given, are written instead of the modules' own
    state dicts (a sharded run passes the gathered ones: :mod:`symbreak.train.fsdp`)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        msd = model.state_dict() if model_state is None else model_state
        _save_tensors(_plain(msd), tmp / "model.safetensors")
        opt_tensors: dict[str, torch.Tensor] = {}
        osd = optimizer.state_dict() if optimizer and optimizer_state is None else optimizer_state
        opt_tree = encode_tree(osd, opt_tensors) if osd is not None else None
        _save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        meta = {"format_version": FORMAT_VERSION, "step": step, **state, "optimizer": opt_tree}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, allow_nan=True) + "\n")
        for f in tmp.iterdir():
            _fsync_file(f)
        fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. final == periodic): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
        write_text_atomic(root / LATEST, final.name + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' ``save_file``, with its I/O failures as ``OSError`` (it raises its own
    ``SafetensorError`` for a full disk or a file-size limit) and the file given the user's
    umask (it creates files 0600)."""
    try:
        save_file(tensors, str(path))
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        if m is None:
            raise OSError(f"cannot write {path}: {e}") from None
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None
    apply_umask(path)


def _plain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; the model has no tied duplicates in
    # its state_dict (the output layer reuses wte.weight functionally), so a copy is enough.
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def resolve_checkpoint(run_dir: Path, which: str = LATEST) -> Path:
    """The checkpoint directory for ``which``: ``latest`` or a step number."""
    root = Path(run_dir) / "checkpoints"
    if which == LATEST:
        pointer = root / LATEST
        if not pointer.is_file():
            raise CheckpointError(
                f"{run_dir} has no checkpoint ({pointer} is missing); train it first, or pass "
                "the right run directory"
            )
        path = root / pointer.read_text().strip()
    else:
        try:
            path = root / step_dir_name(int(which))
        except ValueError:
            raise CheckpointError(
                f"checkpoint '{which}' is not 'latest' or a step number"
            ) from None
    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise CheckpointError(
                f"checkpoint {path} is incomplete ({name} is missing); use another checkpoint"
            )
    return path


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``step_*`` directory holding every checkpoint file, or None. For a run killed
    between renaming its first checkpoint into place and writing ``latest``."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [
        p
        for p in root.glob("step_*")
        if p.is_dir() and all((p / name).is_file() for name in CHECKPOINT_FILES)
    ]
    return max(done, key=lambda p: p.name) if done else None


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{ckpt}/state.json is unreadable or corrupt: {e}") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt}/state.json has format version {state.get('format_version')!r}, expected "
            f"{FORMAT_VERSION}; it was written by another symbreak version"
        )
    return state


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no pickle involved), with a clear error when it is corrupt."""
    try:
        loaded = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    # Own, freshly allocated copies: tensors from load_file sit at arbitrary offsets of the file
    # buffer, and CPU reductions (BLAS dot) sum in an alignment-dependent order, so a resumed
    # optimizer holding such tensors would drift from an uninterrupted run by rounding.
    return {k: v.clone() for k, v in loaded.items()}


def load_model_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Load ``model.safetensors`` strictly: every tensor present, no extras, same shapes."""
    sd = read_tensors(ckpt / "model.safetensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}")
        if bad:
            k = bad[0]
            parts.append(f"shape of {k} is {tuple(sd[k].shape)}, model has {tuple(own[k].shape)}")
        raise CheckpointError(
            f"{ckpt}/model.safetensors does not match the model ({'; '.join(parts)}); "
            "was it trained with a different config?"
        )
    model.load_state_dict(sd, strict=True)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    ckpt: Path,
    state: dict,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Load ``optimizer.safetensors``; ``prepare`` adapts the state dict first (sharding)."""
    tensors = read_tensors(ckpt / "optimizer.safetensors")
    sd = decode_tree(state["optimizer"], tensors)
    optimizer.load_state_dict(prepare(sd) if prepare else sd)


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (0 keeps all). Never deleted: the one
    ``latest`` names, and the one with the lowest recorded ``val_loss`` (what
    ``symbreak eval --checkpoint best`` loads). Also clears temporary directories left by writes
    that were killed."""
    root = Path(run_dir) / "checkpoints"
    latest = (root / LATEST).read_text().strip() if (root / LATEST).is_file() else None
    removed = []
    for tmp in root.glob(".tmp-step_*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)
    if keep > 0:
        steps = sorted(p for p in root.glob("step_*") if p.is_dir())
        best = best_checkpoint(run_dir)
        protected = {latest, best.name if best else None}
        for old in steps[:-keep]:
            if old.name not in protected:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
    return removed


def best_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the lowest finite ``val_loss`` in its state.json (the later
    step on ties), or None."""
    root = Path(run_dir) / "checkpoints"
    best, best_loss = None, math.inf
    for path in sorted(root.glob("step_*")) if root.is_dir() else []:
        if not all((path / n).is_file() for n in CHECKPOINT_FILES):
            continue  # incomplete: never a candidate
        try:
            loss = read_state(path).get("val_loss")
        except CheckpointError:
            continue
        if isinstance(loss, int | float) and math.isfinite(loss) and loss <= best_loss:
            best, best_loss = path, float(loss)
    return best
