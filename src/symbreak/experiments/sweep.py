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
import time
from collections.abc import Callable

from symbreak.errors import CheckpointError, ExperimentError
from symbreak.experiments.cells import (
    BOOKKEEPING,
    CellState,
    Manifest,
    cell_state,
    check_identity,
    prepare_cell,
)
from symbreak.experiments.cluster import submission_parameters, submit
from symbreak.experiments.grid import Cell, Grid
from symbreak.experiments.local import run_local


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
        if st.busy and st.state != "done":  # another process trains it: a run would wait
            what = {st.state: f"busy (step {st.step}, locked)"}
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
    """Run (or, with ``dry_run``, describe) every unfinished cell; return an exit code.

    ``jobs`` cells at once on this machine (``executor="local"``), or a Slurm job array
    (``"slurm"``; ``"submitit-local"`` runs that code path here); ``wait`` blocks until the
    submitted jobs have ended. What ``symbreak sweep`` does.

    >>> from symbreak.experiments import load_grid, run_sweep
    >>> run_sweep(load_grid("grid.toml", ["train.max_steps=50"]), jobs=2)  # doctest: +SKIP
    0
    """
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
        failed = run_local(grid, todo, configs, jobs, manifest, echo)
    else:
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
