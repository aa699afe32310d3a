"""FSDP2 (``train.parallel=fsdp``): 2 gloo ranks on the CPU equal 1 process, resume after
SIGKILL equals an uninterrupted run, the gathered checkpoint loads in one process, and the
sharded state per rank is about half of the whole."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from symbreak.data import load_config
from symbreak.errors import ConfigError
from symbreak.runs import load_run
from symbreak.train.checkpoint import read_state, resolve_checkpoint

# one thread per process on both sides: the thread count alone changes BLAS summation order
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
COMMON = ["model.n_layer=2", "model.block_size=32", "train.batch_size=4", "train.eval_tokens=1024",
          "train.log_every=1", "train.progress=false", "sb.q=true", "sb.v=true",
          "train.dtype=fp32", "train.micro_batch_size=1"]  # fmt: skip
OPTIMS = {"adamw": ["optim.name=adamw", "optim.lr=1e-3", "optim.weight_decay=0.1"],
          "ecd": ["optim.name=ecd", "optim.nu=0.01", "optim.weight_decay=0.01"]}  # fmt: skip


def _cmd(ranks: int, out: Path, name: str, *extra: str) -> list[str]:
    args = [*COMMON, f"train.out_dir={out}", f"data.cache_dir={out / 'cache'}",
            f"train.name={name}", *extra]  # fmt: skip
    if ranks == 1:
        return [sys.executable, "-m", "symbreak", "train", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", "-m", "symbreak", "train", *args]  # fmt: skip


def _train(ranks: int, out: Path, name: str, *extra: str) -> str:
    done = subprocess.run(_cmd(ranks, out, name, *extra), capture_output=True, text=True,
                          env=ENV, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_run(run_dir, device="cpu").model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("opt", "mlp"),
    [("adamw", []), ("ecd", []), ("adamw", ["model.mlp=moe", "model.moe_experts=4"])],
    ids=["adamw", "ecd", "adamw-moe"],
)
def test_fsdp_two_ranks_equal_one_process(tmp_path, opt, mlp):
    """Same global batch (4 = 2 ranks x 2 micro-batches of 1, and 4 micro-batches of 1): the
    parameters agree to 1e-5 and the optimizer state to 1e-3 relative after 3 steps (float32
    rounding in another summation order; the maths itself is checked in float64 below). A
    mixture of experts' stacked weights are sharded along the expert axis."""
    extra = [*OPTIMS[opt], "train.max_steps=3", *mlp]
    _train(1, tmp_path, "one", *extra)
    out = _train(2, tmp_path, "two", *extra, "train.parallel=fsdp")
    assert "x 2 processes" in out and out.count("val loss") == 1  # rank 0 prints
    mem = re.search(r"fsdp: parameters \+ optimizer state ([\d.]+) MiB on rank 0 of ([\d.]+)", out)
    assert mem, out
    mine, total = float(mem.group(1)), float(mem.group(2))
    assert 0.45 < mine / total < 0.55  # the sharded state per rank: about half
    a, b = _params(tmp_path / "one"), _params(tmp_path / "two")
    C = 128
    for k in a:
        if opt == "adamw" and k.endswith("attn.c_attn.bias"):
            # The k part's exact gradient is 0 (bK cancels in the softmax): its gradient is
            # rounding noise, which AdamW's m / sqrt(v) turns into lr-sized steps either way.
            a[k], b[k] = torch.cat([a[k][:C], a[k][2 * C :]]), torch.cat([b[k][:C], b[k][2 * C :]])
        # float32 rounding, amplified: AdamW's near-zero gradients (a few elements ~1e-6 at
        # lr 1e-3), ECD's first-step projection (see the float64 test below)
        tol = 1e-5
        assert torch.allclose(a[k], b[k], atol=tol, rtol=0), (k, (a[k] - b[k]).abs().max())
    # the gathered optimizer state matches the single process's (same names, same values)
    from symbreak.train.checkpoint import decode_tree, read_tensors

    def opt_state(run_dir: Path):
        ckpt = resolve_checkpoint(run_dir)
        tensors = read_tensors(ckpt / "optimizer.safetensors")
        return decode_tree(read_state(ckpt)["optimizer"], tensors)

    sa, sb = opt_state(tmp_path / "one")["state"], opt_state(tmp_path / "two")["state"]
    assert sa.keys() == sb.keys()
    for key in sa:
        for name, v in sa[key].items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                # ECD's momentum scale is rounding-sensitive (1 + kappa c <p, G> cancels); a
                # state gathered in the wrong layout would be off by O(1)
                rel = (v - sb[key][name]).norm() / v.norm().clamp(min=1e-30)
                assert rel < 1e-2, (key, name, rel)


def _kill_run(*marks: str) -> None:
    """SIGKILL torchrun and its workers (which it starts in sessions of their own, so killing
    its process group alone would leave them running): every process whose command line holds
    all of ``marks``."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if all(m.encode() in args for m in marks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


@pytest.mark.slow
def test_fsdp_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    extra = [*OPTIMS["ecd"], "train.max_steps=12", "train.checkpoint_every=4",
             "train.parallel=fsdp"]  # fmt: skip
    _train(2, tmp_path, "full", *extra)
    proc = subprocess.Popen(_cmd(2, tmp_path, "killed", *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    marker = tmp_path / "killed" / "checkpoints" / "step_00000004" / "state.json"
    end = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "ended"
        assert time.time() < end, "no checkpoint at step 4"
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere after step 4, before (or while) writing step 8
    _kill_run(f"train.out_dir={tmp_path}", "train.name=killed")
    proc.wait()
    assert resolve_checkpoint(tmp_path / "killed").name in ("step_00000004", "step_00000008")
    out = _train(2, tmp_path, "killed", *extra)
    assert "resumed at step" in out, out
    a, b = _params(tmp_path / "full"), _params(tmp_path / "killed")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fsdp_refuses_what_it_cannot_shard():
    with pytest.raises(ConfigError, match=r"train\.parallel: fsdp cannot shard SOAP"):
        load_config(None, ["train.parallel=fsdp", "optim.name=soap"])
    with pytest.raises(ConfigError, match=r"train\.parallel: fsdp does not log Noether"):
        load_config(None, ["train.parallel=fsdp", "train.log_noether=true"])
    with pytest.raises(ConfigError, match=r"train\.parallel"):
        load_config(None, ["train.parallel=zero3"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("projection", "weight_decay", "extra"),
    [("global", 0.1, []), ("per_tensor", 0.0, []), ("global", 0.1, ["stacked"])],
    ids=["global", "per_tensor", "global-3d"],
)
def test_sharded_ecd_is_the_single_process_maths_in_float64(projection, weight_decay, extra):
    """The global sums (|g|^2, <p, G>, |p|^2, |theta|^2, the noise norm) reduced over the shards
    and the noise cut per shard: 4 steps with noise and weight decay agree with one process to
    float64 rounding. (In float32 the same comparison differs by ~1e-6: ECD's projection
    G - p <p, G> cancels almost exactly on the first step and amplifies rounding, which any
    other summation order - FSDP's shards - exposes; hence the training tests' tolerance.)
    ``global-3d`` adds a 3-D parameter, as a mixture of experts stacks its experts' weights."""
    worker = Path(__file__).with_name("fsdp_ecd_worker.py")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(worker), projection, str(weight_decay), *extra],
        capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-500:] + done.stderr[-3000:]
    worst = float(re.search(r"max difference (\S+)", done.stdout).group(1))
    assert worst < 1e-12, worst


@pytest.mark.slow
def test_fsdp_in_one_process_says_it_has_nothing_to_shard(tmp_path):
    from symbreak.train.trainer import train

    summary = train(load_config(None, [*COMMON, "train.max_steps=1", "train.parallel=fsdp",
                                       f"train.out_dir={tmp_path}",
                                       f"data.cache_dir={tmp_path / 'cache'}"]))  # fmt: skip
    assert summary.steps == 1
    assert any("nothing to shard" in n for n in summary.notes)
