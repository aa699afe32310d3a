"""``metrics.csv``: one row per log step; the columns the interface contract promises first."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from symbreak.atomic import write_text_atomic

COLUMNS = ["step", "tokens", "train_loss", "val_loss", "lr", "tok_per_s", "elapsed_s"]


class MetricsWriter:
    """Append rows to ``metrics.csv``, flushed at once so a crash loses nothing written."""

    def __init__(
        self,
        path: Path,
        extra_columns: list[str] | tuple[str, ...] = (),
        resume_step: int | None = None,
        fresh: bool = False,
        columns: list[str] | tuple[str, ...] = tuple(COLUMNS),
    ) -> None:
        """With ``resume_step``, rows logged after that step (by a run that died before its next
        checkpoint) are dropped first, so the file reads as if the run had never stopped. With
        ``fresh``, an existing file (of an attempt that left no checkpoint) is replaced.
        ``columns`` (``step`` first) serves other per-step CSV files (``noether.csv``)."""
        self.path = Path(path)
        self.columns = list(columns) + [c for c in extra_columns if c not in columns]
        if fresh:
            self.path.unlink(missing_ok=True)
        elif resume_step is not None and self.path.exists():
            _truncate_after(self.path, resume_step)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")  # noqa: SIM115 (kept open across rows)
        self._w = csv.DictWriter(self._f, fieldnames=self.columns, extrasaction="raise")
        if new:
            self._w.writeheader()
            self._f.flush()

    def write(self, **row: Any) -> None:
        self._w.writerow({k: _fmt(row.get(k)) for k in self.columns})
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def _truncate_after(path: Path, step: int) -> None:
    with open(path, newline="") as f:
        lines = f.readlines()
    n_fields = lines[0].count(",") if lines else 0
    kept = lines[:1] + [
        ln
        for ln in lines[1:]
        if ln.endswith("\n") and ln.count(",") == n_fields and int(ln.split(",", 1)[0]) <= step
    ]
    write_text_atomic(path, "".join(kept))


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
