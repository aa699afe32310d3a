"""Reports name runs and sweeps relative to the report's directory: a results folder holding a
sweep and its report can be moved, and its report regenerated there, with the same paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from symbreak.cli import main

pytestmark = pytest.mark.slow  # trains runs or a sweep

CONFIG = {
    "model.n_layer": 1,
    "model.n_head": 2,
    "model.n_embd": 16,
    "model.block_size": 16,
    "model.vocab_size": 64,
    "data.source": "addition",
    "data.addition_train": 200,
    "data.addition_val": 50,
    "train.batch_size": 2,
    "train.eval_tokens": 64,
    "train.max_steps": 2,
    "train.eval_every": 1,
    "train.log_every": 1,
}
AXES = '[axes.sb]\nsym = {}\nbQbV = { "sb.q" = true, "sb.v" = true }\n'


def strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """results/sweep/ (a two-cell sweep of tiny addition runs); the report goes beside it."""
    root = tmp_path_factory.mktemp("paths")
    keys = {**CONFIG, "data.cache_dir": str(root / "cache")}
    body = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in keys.items())
    grid = root / "grid.toml"
    grid.write_text(f'name = "sweep"\nout_dir = "{root / "results"}"\n\n{AXES}\n[config]\n{body}\n')
    assert main(["sweep", str(grid)]) == 0
    return root / "results"


def report(results: Path, *extra: str) -> dict[str, Any]:
    out = results / "report"
    argv = ["report", str(results / "sweep"), "--out", str(out), "--no-plot", *extra]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def test_a_report_records_no_absolute_path(results, tmp_path_factory, capsys) -> None:
    data = report(results)
    assert data["sweep_dir"] == "../sweep"
    assert sorted(r["run_dir"] for r in data["runs"]) == ["../sweep/bQbV", "../sweep/sym"]
    assert sorted(run for c in data["cells"] for run in c["runs"]) == [
        "../sweep/bQbV",
        "../sweep/sym",
    ]
    root = str(results.parent)
    assert not [s for s in strings(data) if s.startswith("/") or root in s]
    assert root not in (results / "report" / "report.md").read_text()

    # Move the whole folder and regenerate the report there: the same relative paths.
    moved = tmp_path_factory.mktemp("moved") / "published"
    shutil.move(str(results), moved)
    try:
        again = report(moved)
        assert str(moved) not in (moved / "report" / "report.md").read_text()
        for key in ("sweep_dir", "runs"):
            assert again[key] == data[key]
        assert [c["runs"] for c in again["cells"]] == [c["runs"] for c in data["cells"]]
        assert [r["final_val_loss"] for r in again["runs"]] == [
            r["final_val_loss"] for r in data["runs"]
        ]
    finally:
        shutil.move(str(moved), results)
    capsys.readouterr()


def test_the_addition_report_records_relative_run_dirs(results, capsys) -> None:
    out = results / "report-addition"
    argv = ["report", str(results / "sweep"), "--task", "addition", "--no-probes"]
    assert main([*argv, "--out", str(out), "--no-plot"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert sorted(r["run_dir"] for r in data["runs"]) == ["../sweep/bQbV", "../sweep/sym"]
    assert not [s for s in strings(data) if s.startswith("/")]
    assert data["provenance"]["symbreak"]
    capsys.readouterr()
