"""What training leaves in its run directory, across failures and resumes."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from symbreak.data import load_config, prepare_texts
from symbreak.errors import CheckpointError, ConfigError, TrainingError
from symbreak.model import GPT
from symbreak.train.checkpoint import read_state, resolve_checkpoint
from symbreak.train.metrics import read_metrics
from symbreak.train.trainer import RunSummary, train

SMALL = ["model.n_layer=1", "model.n_head=1", "model.n_embd=16", "model.block_size=16",
         "train.batch_size=2", "train.eval_tokens=64", "train.log_every=1", "train.eval_every=2",
         "train.progress=false", "train.threads=1", "optim.lr=1e-3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    words = "the quick brown fox jumps over the lazy dog while seven owls watch it go. "
    docs = [(f"doc{i}", words * 12 + f"number {i}\n") for i in range(6)]
    prepare_texts(docs, root / "shards", show_progress=False)
    return root / "shards"


def args(out: Path, shards: Path, name: str, *extra: str) -> list[str]:
    return [*SMALL, f"train.out_dir={out}", f"data.source={shards}", f"train.name={name}", *extra]


def run(out, shards, name, *extra) -> RunSummary:
    return train(load_config(overrides=args(out, shards, name, *extra)))


def steps(run_dir: Path) -> list[int]:
    return [int(r["step"]) for r in read_metrics(run_dir / "metrics.csv")]


# ---------------------------------------------------------------- failed fresh starts


def _poison(monkeypatch, from_call: int) -> None:
    orig = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = orig(self, idx, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= from_call:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)


def test_a_failed_fresh_start_leaves_nothing_behind(tmp_path, shards, monkeypatch):
    out = tmp_path / "runs"
    _poison(monkeypatch, 1)  # NaN loss at the first step
    with pytest.raises(TrainingError, match="at step 1"):
        run(out, shards, "nan", "train.max_steps=3")
    assert not (out / "nan").exists() and not out.exists()
    monkeypatch.undo()
    with pytest.raises(TrainingError, match="ECD cannot move"), pytest.warns(RuntimeWarning):
        run(out, shards, "ecd", "train.max_steps=3", "optim.name=ecd", "optim.F0=1000")  # frozen
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "wandb", None)  # a missing optional package
    out.mkdir()
    with pytest.raises(ConfigError, match="wandb"):
        run(out, shards, "wb", "train.max_steps=3", "train.wandb=true")
    assert list(out.iterdir()) == []


def test_a_fresh_start_drops_the_rows_of_a_killed_attempt(tmp_path, shards):
    run_dir = tmp_path / "r"
    run_dir.mkdir()  # what an attempt killed before its first checkpoint leaves
    (run_dir / "metrics.csv").write_text("step,tokens\n0,0\n1,32\n2,64\n")
    (run_dir / "wandb_id.json").write_text('{"id": "old"}')
    (run_dir / "tensorboard").mkdir()
    run(tmp_path, shards, "r", "train.max_steps=2")
    assert steps(run_dir) == [0, 1, 2]
    assert not (run_dir / "wandb_id.json").exists() and not (run_dir / "tensorboard").exists()


def test_a_resume_after_a_failure_keeps_only_its_own_rows(tmp_path, shards, monkeypatch):
    run(tmp_path, shards, "r", "train.max_steps=2")
    _poison(monkeypatch, 2)  # resumed at step 2: step 3 is fine, step 4 is NaN
    with pytest.raises(TrainingError, match="at step 4"):
        run(tmp_path, shards, "r", "train.max_steps=6")
    assert steps(tmp_path / "r") == [0, 1, 2, 3]
    monkeypatch.undo()
    run(tmp_path, shards, "r", "train.max_steps=4")
    assert steps(tmp_path / "r") == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- the validation set


def test_the_held_out_set_is_printed_and_part_of_the_run(tmp_path, shards, capsys):
    run(tmp_path, shards, "v", "train.max_steps=2", "train.eval_tokens=10000000")
    printed = capsys.readouterr().out
    assert "validation: a fixed held-out set of" in printed
    assert "the whole validation split, fewer than train.eval_tokens=10,000,000" in printed
    with pytest.raises(CheckpointError, match="another held-out set"):
        run(tmp_path, shards, "v", "train.max_steps=4", "train.eval_tokens=32")
    run(tmp_path, shards, "w", "train.max_steps=2", "train.eval_tokens=32")
    assert "held-out set of 2 windows x 16 = 32 tokens" in capsys.readouterr().out


# ---------------------------------------------------------------- small things


def test_elapsed_s_is_cumulative_across_a_resume(tmp_path, shards):
    run(tmp_path, shards, "e", "train.max_steps=3")
    first = read_state(resolve_checkpoint(tmp_path / "e"))["elapsed_s"]
    run(tmp_path, shards, "e", "train.max_steps=4")
    rows = read_metrics(tmp_path / "e" / "metrics.csv")
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= first > 0
    assert read_state(resolve_checkpoint(tmp_path / "e"))["elapsed_s"] >= elapsed[-1]


def test_the_summary_after_an_interrupt_names_the_step_of_the_last_validation(
    tmp_path, shards, monkeypatch
):
    orig = GPT.forward
    calls = {"n": 0}

    def interrupting(self, idx, targets=None):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:  # during step 3; eval_every=2 validated at step 2
                os.kill(os.getpid(), signal.SIGINT)
        return orig(self, idx, targets)

    monkeypatch.setattr(GPT, "forward", interrupting)
    summary = run(tmp_path, shards, "i", "train.max_steps=8")
    assert summary.steps == 3 and summary.stopped_by == "SIGINT"
    val_line = next(ln for ln in summary.lines() if ln.startswith("val loss"))
    assert "at step 2 " in val_line


def test_a_file_in_place_of_the_output_directory_is_a_config_error(tmp_path, shards):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"train\.out_dir: .* is a file"):
        run(tmp_path / "afile", shards, "r", "train.max_steps=1")
    with pytest.raises(ConfigError, match=r"train\.name: .* is a file"):
        run(tmp_path, shards, "afile", "train.max_steps=1")


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_follow_the_umask(tmp_path, shards, umask):
    old = os.umask(umask)
    try:
        prepare_texts([("a", "one two three\n" * 50), ("b", "four five\n" * 50)],
                      tmp_path / "data", show_progress=False)
        run(tmp_path, shards, "m", "train.max_steps=1")
    finally:
        os.umask(old)
    files = [*(tmp_path / "data").iterdir(), *(tmp_path / "m").rglob("*")]
    files.append(tmp_path / "data")
    assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".bin" for p in files)
    for p in files:
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_plain_progress_lines_when_not_on_a_terminal(tmp_path, shards, capsys):
    run(tmp_path, shards, "p", "train.max_steps=4", "train.progress=true", "train.log_every=2")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("p: step")]
    assert [ln.split()[2] for ln in lines] == ["2/4", "4/4"] and "loss=" in lines[-1]


@pytest.mark.slow
def test_a_real_file_size_limit_while_checkpointing_is_one_error_line(tmp_path, shards):
    """Not a mock: the kernel refuses the write (RLIMIT_FSIZE, SIGXFSZ ignored -> EFBIG)."""
    run(tmp_path, shards, "d", "train.max_steps=2")
    run_dir = tmp_path / "d"
    size = (resolve_checkpoint(run_dir) / "model.safetensors").stat().st_size

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    proc = subprocess.run(
        [sys.executable, "-m", "symbreak", "train", *args(tmp_path, shards, "d"),
         "train.max_steps=4"],
        capture_output=True, text=True, env=ENV, timeout=300, preexec_fn=limit,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert line.startswith("error: could not write checkpoint step 4") and "File too large" in line
    assert "previous checkpoint, which is intact" in line
    assert "ulimit -f" in line and "free space" not in line  # the advice fits the reason
    assert resolve_checkpoint(run_dir).name == "step_00000002"
    assert not list((run_dir / "checkpoints").glob(".tmp*"))
    run(tmp_path, shards, "d", "train.max_steps=4")  # and the run goes on from step 2
    assert steps(run_dir) == [0, 1, 2, 3, 4]
    assert json.loads((resolve_checkpoint(run_dir) / "state.json").read_text())["step"] == 4
