"""``symbreak noether`` on awkward inputs: a run named twice, runs of the same name, a
noether.csv cut while a step was being written."""

from __future__ import annotations

from pathlib import Path

import pytest

from symbreak.analysis.noether_plot import load_run, plot_noether, summary_lines
from symbreak.errors import SymbreakError

pytest.importorskip("matplotlib")


def fake_run(root: Path, name: str) -> Path:
    from test_noether import fake_run as make  # tests/ is on sys.path under pytest

    root.mkdir(parents=True, exist_ok=True)
    return make(root, name, "ecd")


def test_a_run_named_twice_is_refused(tmp_path: Path):
    a = fake_run(tmp_path, "a")
    with pytest.raises(SymbreakError, match="is given twice"):
        plot_noether([a, tmp_path / "." / "a"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_runs_of_the_same_name_get_distinct_legend_labels(tmp_path: Path):
    a = fake_run(tmp_path / "grid1", "seed0")
    b = fake_run(tmp_path / "grid2", "seed0")
    runs = plot_noether([a, b], tmp_path / "x.png")
    labels = [r.label for r in runs]
    assert len(set(labels)) == 2 and labels[0].startswith("grid1/")


def test_a_step_cut_mid_write_is_left_out_and_said(tmp_path: Path):
    run = fake_run(tmp_path, "r")
    csv = run / "noether.csv"
    text = csv.read_text()
    csv.write_text(text[: len(text) - 15])  # the last row cut mid-line
    cut = load_run(run)
    assert cut.steps.tolist() == [10, 20]
    assert any("step 30 is incomplete" in n for n in summary_lines([cut]))

    lines = text.splitlines(keepends=True)
    csv.write_text("".join(lines[:-3]))  # whole rows, but step 30 lacks three of its twelve
    assert load_run(run).steps.tolist() == [10, 20]

    csv.write_text(text)
    full = load_run(run)
    assert full.steps.tolist() == [10, 20, 30] and not full.notes
