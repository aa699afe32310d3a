"""Data parallelism: 2 processes (gloo, CPU) under torchrun equal 1 process, same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
import torch

from symbreak.config import Config
from symbreak.model import GPT
from symbreak.train.checkpoint import load_model_weights, read_state, resolve_checkpoint
from symbreak.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # torchrun and the symbreak command in child processes

COMMON = ["model.n_layer=2", "model.block_size=32", "train.batch_size=4", "train.max_steps=3",
          "train.eval_tokens=1024", "train.log_every=1", "train.progress=false", "sb.q=true",
          "sb.v=true", "optim.name=ecd", "optim.nu=0.01",
          "train.dtype=fp32"]  # 1e-6 is a float32 claim: bf16 rounds per micro-batch


def _params(run_dir):
    cfg = Config.from_dict(tomllib.loads((run_dir / "config.toml").read_text()))
    model = GPT(cfg.model, cfg.sb)
    load_model_weights(model, resolve_checkpoint(run_dir))
    return model.state_dict()


@pytest.mark.parametrize("mlp", [[], ["model.mlp=moe", "model.moe_experts=4"]],
                         ids=["dense", "moe"])  # fmt: skip
def test_ddp_two_ranks_equal_one_process(tmp_path, mlp):
    """A mixture of experts balances its load over the tokens of each forward, so both runs
    need the same groups of sequences: rank r holds windows r, r + 2, ..., so micro-batches of
    1 (the dense loss is a plain mean and does not care)."""
    cache = tmp_path / "cache"
    args = [*COMMON, f"train.out_dir={tmp_path}", f"data.cache_dir={cache}", *mlp]
    if mlp:
        args.append("train.micro_batch_size=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "symbreak", "train", *args, "train.name=one",
         f"train.micro_batch_size={1 if mlp else 2}"], capture_output=True, text=True, env=env,
        timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "symbreak", "train", *args, "train.name=two"],
        capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "x 2 processes" in ddp.stdout and ddp.stdout.count("val loss") == 1  # rank 0 only
    a, b = _params(tmp_path / "one"), _params(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, (a[k] - b[k]).abs().max())
    assert read_state(resolve_checkpoint(tmp_path / "two"))["world_size"] == 2
    va = [float(r["val_loss"]) for r in read_metrics(tmp_path / "one" / "metrics.csv")
          if r["val_loss"]]
    vb = [float(r["val_loss"]) for r in read_metrics(tmp_path / "two" / "metrics.csv")
          if r["val_loss"]]
    assert len(va) == len(vb) and all(abs(x - y) < 1e-4 for x, y in zip(va, vb, strict=True))
