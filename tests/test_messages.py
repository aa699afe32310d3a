"""What commands tell a user in the corner cases: outputs, run paths, summaries."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from symbreak.errors import CheckpointError
from symbreak.outputs import output_file
from symbreak.runs import load_run_config
from symbreak.train.trainer import RunSummary


def test_an_out_path_ending_in_a_separator_is_a_directory_even_when_missing(tmp_path: Path):
    assert output_file(f"{tmp_path}/new/", "step_1.json", "--out") == tmp_path / "new/step_1.json"
    assert output_file(tmp_path, "step_1.json", "--out") == tmp_path / "step_1.json"
    assert output_file(tmp_path / "x.json", "step_1.json", "--out") == tmp_path / "x.json"


def test_a_file_given_as_a_run_directory_is_called_a_file(tmp_path: Path):
    f = tmp_path / "metrics.csv"
    f.write_text("step\n")
    with pytest.raises(CheckpointError, match="is a file, not a run directory"):
        load_run_config(f)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run_config(tmp_path / "missing")


def _summary(**kw) -> RunSummary:
    base = {
        "run_dir": "runs/r", "steps": 0, "tokens": 0, "params": 1000, "initial_val_loss": 10.8555,
        "final_val_loss": 10.8555, "best_val_loss": 10.8555, "final_train_loss": math.nan,
        "tok_per_s": math.nan, "elapsed_s": 0.0, "device": "cpu", "dtype": "float32",
        "val_step": 0,
    }  # fmt: skip
    return RunSummary(**{**base, **kw})


def test_a_run_stopped_before_its_first_evaluation_does_not_claim_one():
    lines = "\n".join(_summary(stopped_by="SIGINT").lines())
    assert "10.8555 at start (not evaluated since)" in lines
    assert "-> 10.8555 at step 0" not in lines
    assert "train loss   none logged yet" in lines


def test_a_finished_run_reports_its_curve():
    lines = "\n".join(
        _summary(steps=30, final_val_loss=2.5, best_val_loss=2.4, final_train_loss=2.6,
                 val_step=30).lines()
    )
    assert "10.8555 at start -> 2.5000 at step 30 (best 2.4000)" in lines
    assert "train loss   2.6000" in lines
