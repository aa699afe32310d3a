"""What commands tell a user in the corner cases: outputs, run paths, summaries."""

from __future__ import annotations

import math
import re
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


@pytest.mark.parametrize("name", ["my run", "café", "a/b", "-x", ""])
def test_run_and_sweep_names_follow_one_rule_that_says_what_is_allowed(name: str):
    from symbreak.config import NAME_RULE, Config
    from symbreak.errors import ConfigError, ExperimentError
    from symbreak.experiments.grid import parse_grid

    cfg = Config()
    cfg.set("train.name", name)
    with pytest.raises(ConfigError, match=re.escape(NAME_RULE)):
        cfg.resolve(vocab_size=64)
    with pytest.raises(ExperimentError, match=re.escape(NAME_RULE)):
        parse_grid({"name": name or " ", "config": {"train.max_steps": 2}}, None, [])


def test_usual_run_names_pass():
    from symbreak.config import Config

    for name in ("demo", "demo-20261204-171000", "adamw-bQbV-seed0", "lr=1e-3", "v1.2+x_y"):
        cfg = Config()
        cfg.set("train.name", name)
        cfg.resolve(vocab_size=64)


def test_a_failed_atomic_write_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    import errno
    import os

    from symbreak import atomic

    def full(src, dst):  # what a full disk or a quota says, naming the temporary file
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(atomic.os, "replace", full)
    target = tmp_path / "report.json"
    with pytest.raises(OSError) as e:
        atomic.write_text_atomic(target, "{}")
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == str(target) and ".tmp-" not in str(e.value)
    assert os.listdir(tmp_path) == []  # the temporary file is gone too
