"""One training process per run directory: an OS lock, released on any exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from symbreak.train.lock import RunLockedError, is_locked, run_lock

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _holder(run_dir) -> subprocess.Popen:
    """A child process that takes the lock, says so, and sleeps."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from symbreak.train.lock import run_lock
        with run_lock({str(run_dir)!r}):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_holder_is_refused_with_the_pid_and_sigkill_releases(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    child = _holder(run_dir)
    try:
        assert is_locked(run_dir)
        with pytest.raises(RunLockedError, match=f"pid {child.pid} on host"), run_lock(run_dir):
            pass
    finally:
        child.kill()  # SIGKILL: no cleanup code runs; the kernel drops the lock
        child.wait()
    assert not is_locked(run_dir)
    with run_lock(run_dir):
        assert is_locked(run_dir)
    assert not is_locked(run_dir)


def test_the_lock_survives_its_directory_being_recreated(tmp_path):
    run_dir = tmp_path / "r"
    with run_lock(run_dir):
        pass
    import shutil

    shutil.rmtree(run_dir)
    with run_lock(run_dir):  # a fresh directory, a fresh lock file
        assert (run_dir / ".lock").is_file() and is_locked(run_dir)


@pytest.mark.slow
def test_cli_train_on_a_locked_run_exits_nonzero_naming_the_holder(tmp_path):
    run_dir = tmp_path / "x"
    child = _holder(run_dir)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "symbreak", "train", f"train.out_dir={tmp_path}",
             "train.name=x", "train.progress=false", "train.threads=1"],
            capture_output=True, text=True, env=ENV, timeout=120,
        )
    finally:
        child.kill()
        child.wait()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"pid {child.pid}" in line
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing touched


@pytest.mark.slow
def test_a_second_torchrun_job_stops_on_every_rank_instead_of_hanging(tmp_path):
    child = _holder(tmp_path / "two")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             "-m", "symbreak", "train", f"train.out_dir={tmp_path}", "train.name=two",
             "train.progress=false", "train.threads=1", "train.device=cpu"],
            capture_output=True, text=True, env=ENV, timeout=240,
        )
    finally:
        child.kill()
        child.wait()
    # Every rank learns the outcome from rank 0 and stops; torchrun may end the slower rank
    # before it prints, so at least one line (and never the timeout) is what can be asserted.
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: run directory")]
    assert 1 <= len(errors) <= 2 and all(f"pid {child.pid}" in ln for ln in errors)
