"""Resume bit for bit, signals, and failures that must lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from symbreak.config import Config
from symbreak.data import load_config
from symbreak.errors import CheckpointError, TrainingError
from symbreak.model import GPT
from symbreak.train.checkpoint import load_model_weights, resolve_checkpoint
from symbreak.train.metrics import read_metrics
from symbreak.train.trainer import train

pytestmark = pytest.mark.slow  # every test trains, several in child processes

BASE = ["model.n_layer=2", "model.block_size=32", "train.batch_size=4", "train.eval_tokens=1024",
        "train.log_every=1", "train.eval_every=4", "train.progress=false", "sb.q=true", "sb.v=true"]
TIMING = ("tok_per_s", "elapsed_s")


def overrides(out: Path, cache: Path, name: str, *extra: str) -> list[str]:
    return [*BASE, f"train.out_dir={out}", f"data.cache_dir={cache}", f"train.name={name}", *extra]


def run(out, cache, name, *extra):
    return train(load_config(overrides=overrides(out, cache, name, *extra)))


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    cfg = Config.from_dict(__import__("tomllib").loads((run_dir / "config.toml").read_text()))
    model = GPT(cfg.model, cfg.sb)
    load_model_weights(model, resolve_checkpoint(run_dir))
    return model.state_dict()


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in read_metrics(run_dir / "metrics.csv")]


def assert_same_run(a: Path, b: Path, extra_eval_at: int | None = None) -> None:
    pa, pb = params(a), params(b)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    ra, rb = rows(a), rows(b)
    if extra_eval_at is not None:  # b's first session ended (and so validated) there
        (row,) = [r for r in rb if r["step"] == str(extra_eval_at)]
        row["val_loss"] = ""
    assert ra == rb


@pytest.mark.parametrize("opt", ["adamw", "ecd"])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, corpus_cache, opt):
    extra = [f"optim.name={opt}", "optim.nu=0.01" if opt == "ecd" else "optim.lr=1e-3"]
    run(tmp_path, corpus_cache, "full", "train.max_steps=10", *extra)
    first = run(tmp_path, corpus_cache, "split", "train.max_steps=5", *extra)
    assert first.steps == 5
    second = run(tmp_path, corpus_cache, "split", "train.max_steps=10", *extra)
    assert second.resumed_from == 5 and second.steps == 10
    assert_same_run(tmp_path / "full", tmp_path / "split", extra_eval_at=5)


def _cli(out, cache, name, *extra) -> list[str]:
    return [sys.executable, "-m", "symbreak", "train", *overrides(out, cache, name, *extra)]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "process ended"
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "variant",
    [
        [],
        ["sb.q_components=4", "sb.component_unit=sequence", "train.micro_batch_size=2"],
        ["model.mlp=moe", "model.moe_experts=4"],
    ],
    ids=["one bQ", "4 bQ components per sequence", "moe"],
)
def test_sigkill_between_checkpoints_then_resume_is_bit_exact(tmp_path, corpus_cache, variant):
    """For a mixture of experts this includes its logged routing statistics (metrics.csv)."""
    extra = ["train.max_steps=12", "train.checkpoint_every=4", "optim.lr=1e-3", *variant]
    subprocess.run(_cli(tmp_path, corpus_cache, "full", *extra), check=True, capture_output=True)
    proc = subprocess.Popen(_cli(tmp_path, corpus_cache, "killed", *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "killed" / "checkpoints" / "step_00000004" / "state.json", proc)
    time.sleep(0.3)  # somewhere after step 4, before (or while) writing step 8
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert resolve_checkpoint(tmp_path / "killed").name in ("step_00000004", "step_00000008")
    done = subprocess.run(_cli(tmp_path, corpus_cache, "killed", *extra), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    assert_same_run(tmp_path / "full", tmp_path / "killed")
    assert not list((tmp_path / "killed" / "checkpoints").glob(".tmp*"))


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, corpus_cache,
                                                                  monkeypatch):
    """A write interrupted after the model file: latest still names the previous checkpoint."""
    import symbreak.train.checkpoint as ck

    real = ck.save_file
    calls = {"n": 0}

    def dying_save(tensors, path):
        real(tensors, path)
        calls["n"] += 1
        if calls["n"] == 3:  # step 2's model file written, then the process "dies"
            raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, corpus_cache, "w", "train.max_steps=4", "train.checkpoint_every=1")
    monkeypatch.setattr(ck, "save_file", real)
    assert resolve_checkpoint(tmp_path / "w").name == "step_00000001"
    summary = run(tmp_path, corpus_cache, "w", "train.max_steps=4", "train.checkpoint_every=1")
    assert summary.resumed_from == 1 and summary.steps == 4


def test_sigterm_finishes_the_step_checkpoints_and_exits_zero(tmp_path, corpus_cache):
    extra = ["train.max_steps=100000", "train.eval_every=0"]
    proc = subprocess.Popen(_cli(tmp_path, corpus_cache, "term", *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "term" / "metrics.csv", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out and "resume" in out
    step = int(resolve_checkpoint(tmp_path / "term").name.split("_")[1])
    assert 0 < step < 100000
    assert int(read_metrics(tmp_path / "term" / "metrics.csv")[-1]["step"]) <= step


def test_resuming_with_another_model_shape_is_refused(tmp_path, corpus_cache):
    run(tmp_path, corpus_cache, "r", "train.max_steps=2")
    before = (tmp_path / "r" / "metrics.csv").read_text()
    with pytest.raises(CheckpointError, match=r"model\.n_embd"):
        run(tmp_path, corpus_cache, "r", "train.max_steps=4", "model.n_embd=64")
    assert (tmp_path / "r" / "metrics.csv").read_text() == before


def test_corrupt_latest_checkpoint_is_a_clear_error(tmp_path, corpus_cache):
    run(tmp_path, corpus_cache, "c", "train.max_steps=2")
    ckpt = resolve_checkpoint(tmp_path / "c")
    (ckpt / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tmp_path, corpus_cache, "c", "train.max_steps=4")
    (ckpt / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        run(tmp_path, corpus_cache, "c", "train.max_steps=4")


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, corpus_cache,
                                                                      monkeypatch):
    orig = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = orig(self, idx, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 3:  # steps 3, 4, ... (one micro-batch each)
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(TrainingError, match="at step 3"):
        run(tmp_path, corpus_cache, "nan", "train.max_steps=6", "train.checkpoint_every=2")
    assert resolve_checkpoint(tmp_path / "nan").name == "step_00000002"
    calls["n"] = 0
    with pytest.warns(RuntimeWarning, match="non-finite"):
        summary = run(tmp_path, corpus_cache, "nan2", "train.max_steps=4", "train.skip_nonfinite=5")
    assert summary.steps == 4


def test_out_of_disk_while_checkpointing_is_a_clear_error(tmp_path, corpus_cache, monkeypatch):
    import symbreak.train.checkpoint as ck

    run(tmp_path, corpus_cache, "disk", "train.max_steps=2")

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(TrainingError, match="No space left on device"):
        run(tmp_path, corpus_cache, "disk", "train.max_steps=4")
    assert resolve_checkpoint(tmp_path / "disk").name == "step_00000002"
    assert not list((tmp_path / "disk" / "checkpoints").glob(".tmp*"))


def test_keep_checkpoints_prunes_old_ones(tmp_path, corpus_cache):
    run(tmp_path, corpus_cache, "k", "train.max_steps=5", "train.checkpoint_every=1",
        "train.keep_checkpoints=2")
    names = sorted(p.name for p in (tmp_path / "k" / "checkpoints").glob("step_*"))
    assert names == ["step_00000004", "step_00000005"]


def test_cli_resume_message_and_pickle_checkpoint_refused(tmp_path, corpus_cache):
    import pickle

    run(tmp_path, corpus_cache, "p", "train.max_steps=1")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = resolve_checkpoint(tmp_path / "p")
    (ckpt / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    proc = subprocess.run(_cli(tmp_path, corpus_cache, "p", "train.max_steps=2"),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "safetensors" in proc.stderr and not marker.exists()


def test_runs_from_before_eval_windows_keep_their_first_windows(tmp_path, corpus_cache):
    import json
    import tomllib

    run(tmp_path, corpus_cache, "old", "train.max_steps=2", "train.eval_windows=first")
    run_dir = tmp_path / "old"
    # Make it look like a run written before train.eval_windows existed.
    ckpt = resolve_checkpoint(run_dir)
    state = json.loads((ckpt / "state.json").read_text())
    del state["config"]["train"]["eval_windows"]
    (ckpt / "state.json").write_text(json.dumps(state))
    summary = run(tmp_path, corpus_cache, "old", "train.max_steps=4")  # today's default: spread
    assert any("original held-out set (train.eval_windows=first)" in n for n in summary.notes)
    stored = tomllib.loads((run_dir / "config.toml").read_text())
    assert stored["train"]["eval_windows"] == "first"
    fresh = run(tmp_path, corpus_cache, "fresh", "train.max_steps=4", "train.eval_windows=first")
    assert summary.final_val_loss == fresh.final_val_loss


def test_a_checkpoint_without_its_latest_pointer_is_still_resumed(tmp_path, corpus_cache):
    """Killed between renaming a first checkpoint into place and writing `latest`: the next
    run resumes from the newest complete step directory instead of starting over."""
    run(tmp_path, corpus_cache, "r", "train.max_steps=4", "train.checkpoint_every=2",
        "train.keep_checkpoints=0")  # fmt: skip
    (tmp_path / "r" / "checkpoints" / "latest").unlink()
    summary = run(tmp_path, corpus_cache, "r", "train.max_steps=6", "train.checkpoint_every=2")
    assert summary.resumed_from == 4 and summary.steps == 6
