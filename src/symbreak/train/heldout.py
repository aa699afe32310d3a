"""The held-out set a run's validation curve is measured on, and its fingerprint: a resumed
run continues its curve only on the same windows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symbreak.data import val_window_indices
from symbreak.errors import CheckpointError


@dataclass
class HeldOutSet:
    """What the validation curve is measured on: ``windows`` windows of the validation split
    (evenly spaced over it, or its first ones: ``how``), ``block_size`` target tokens each."""

    windows: int
    block_size: int
    available: int  # windows in the whole validation split
    digest: str  # blake2b of the windows' tokens: a changed data source shows here
    how: str = "spread"

    @property
    def tokens(self) -> int:
        return self.windows * self.block_size

    def fingerprint(self) -> dict[str, Any]:
        return {"windows": self.windows, "block_size": self.block_size, "digest": self.digest}

    def describe(self, asked: int) -> str:
        line = (
            f"validation: a fixed held-out set of {self.windows:,} windows x {self.block_size} "
            f"= {self.tokens:,} tokens"
            + (" spread evenly over the split" if self.how == "spread" else ", the split's first")
        )
        if self.windows == self.available and asked > self.tokens:
            return line + (
                f": the whole validation split, fewer than train.eval_tokens={asked:,}"
            )
        return line + f" (train.eval_tokens={asked:,}; the split has {self.available:,} windows)"


def held_out_set(windows: Any, eval_tokens: int, how: str = "spread") -> HeldOutSet:
    """The held-out set that :func:`symbreak.data.val_batches` builds, summarised."""
    idx = val_window_indices(len(windows), eval_tokens, windows.block_size, how)
    tokens = windows.get(idx).numpy()
    digest = hashlib.blake2b(tokens.tobytes(), digest_size=12).hexdigest()
    return HeldOutSet(len(idx), windows.block_size, len(windows), digest, how)


def check_same_val_set(resumed: dict, val_set: HeldOutSet, ckpt: Path) -> None:
    """A validation curve is comparable only on one held-out set: refuse to continue it on
    another (a changed train.eval_tokens, or data behind data.source that changed)."""
    old = resumed.get("val_set")
    if old is None or old == val_set.fingerprint():
        return  # checkpoints from before the fingerprint existed cannot be checked
    if old.get("windows") != val_set.windows:
        why = (
            f"{old.get('windows'):,} windows there, {val_set.windows:,} now (train.eval_tokens "
            "changed?)"
        )
    else:
        why = "same size but other tokens (the data behind data.source changed?)"
    raise CheckpointError(
        f"cannot resume from {ckpt}: its validation curve was measured on another held-out set "
        f"({why}); resume with the run's own train.eval_tokens and data, or use another "
        "train.name"
    )
