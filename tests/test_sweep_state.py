"""What a sweep says about its cells: a Ctrl-C is an interruption, never a failure (the children
get the signal too, checkpoint and exit 0 before their cells are done); a cell another process
is training shows as busy; sweep.json is a dated snapshot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from symbreak.experiments import local
from symbreak.experiments.cells import Manifest, prepare_cell
from symbreak.experiments.grid import parse_grid

TINY = {
    "model.n_layer": 1, "model.n_head": 2, "model.n_embd": 16, "model.block_size": 16,
    "model.vocab_size": 64, "data.source": "addition", "train.max_steps": 5,
}  # fmt: skip


def _grid(tmp_path: Path):
    grid = parse_grid(
        {"config": TINY, "axes": {"train.seed": [0, 1]}, "out_dir": str(tmp_path)}, None, []
    )
    cells = grid.cells()
    configs = {c.name: prepare_cell(c, grid.sweep_dir) for c in cells}
    return grid, cells, configs


def _children_exit_with(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    child = [sys.executable, "-c", f"print('stopped by SIGINT'); raise SystemExit({code})"]
    monkeypatch.setattr(local, "train_command", lambda config, procs: child)


@pytest.mark.slow
@pytest.mark.parametrize("code", [0, 130])
def test_children_stopped_by_the_signal_make_an_interruption(tmp_path, monkeypatch, code):
    _children_exit_with(monkeypatch, code)
    grid, cells, configs = _grid(tmp_path)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        local.run_local(grid, cells, configs, 2, Manifest(grid, cells, "local"), lines.append)
    text = "\n".join(lines)
    assert "FAILED" not in text and "interrupted" in text


@pytest.mark.slow
def test_a_child_that_crashes_is_a_failure(tmp_path, monkeypatch):
    _children_exit_with(monkeypatch, 1)
    grid, cells, configs = _grid(tmp_path)
    lines: list[str] = []
    failed = local.run_local(grid, cells, configs, 2, Manifest(grid, cells, "local"), lines.append)
    assert sorted(failed) == sorted(c.name for c in cells)
    assert "FAILED" in "\n".join(lines)


def test_dry_run_shows_a_cell_another_process_trains_as_busy(tmp_path):
    import json

    from symbreak.experiments.cells import run_dir_of
    from symbreak.experiments.sweep import run_sweep
    from symbreak.train.lock import run_lock

    grid, cells, _ = _grid(tmp_path)
    lines: list[str] = []
    run_dir_of(cells[0]).mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir_of(cells[0])):
        assert run_sweep(grid, dry_run=True, echo=lines.append) == 0
    (busy,) = [ln for ln in lines if cells[0].name in ln]
    (free,) = [ln for ln in lines if cells[1].name in ln]
    assert "busy" in busy and "locked" in busy and " run " in free

    Manifest(grid, cells, "local").write()
    data = json.loads((grid.sweep_dir / "sweep.json").read_text())
    assert data["updated"] and isinstance(data["writer_pid"], int)
    # run directories relative to the sweep directory: the sweep can be moved whole
    entry = next(c for c in data["cells"] if c["name"] == cells[0].name)
    assert (grid.sweep_dir / entry["run_dir"]).resolve() == run_dir_of(cells[0]).resolve()
    assert not entry["run_dir"].startswith("/")
