"""``symbreak bench train`` on a one-block, 32-wide model: keys, ratios, FLOPs, the CLI route.

Timings are never asserted (a shared machine makes them noise); only that they are finite and
that the derived figures are the documented functions of them.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from symbreak.bench.train import (
    _is_paper_code_config,
    bench_train,
    format_table,
    model_flops_per_token,
)
from symbreak.cli.bench import register
from symbreak.data import load_config
from symbreak.device import cpu_has_native_bf16
from symbreak.model import GPT

SMALL = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=16",
    "train.batch_size=2",
]
MATMUL = 256  # the peak matmul's n: small keeps the test fast; its value is not asserted


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine a waiting thread stalls every kernel."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def overrides(corpus_cache: Path) -> list[str]:
    return [*SMALL, f"data.cache_dir={corpus_cache}"]


@pytest.fixture(scope="module")
def result(one_thread: None, overrides: list[str], tmp_path_factory: pytest.TempPathFactory):
    trace = tmp_path_factory.mktemp("prof") / "trace.json"
    return bench_train(overrides, steps=2, warmup=1, matmul_size=MATMUL, profile=trace)


TIMED = (
    "tok_per_s",
    "step_ms",
    "step_ms_min",
    "step_ms_max",
    "step_ms_mean",
    "achieved_flops_per_s",
    "mfu",
)


def test_keys_present_and_finite(result: dict) -> None:
    numbers = (
        *TIMED,
        "model_flops_per_token",
        "matmul_peak_flops_per_s",
        "matmul_peak_fp32_flops_per_s",
        "tok_per_s_per_fp32_gflops",
        "sb_overhead",
        "loader_tok_per_s",
        "loader_over_train",
        "peak_rss_bytes",
        "params",
        "params_non_embedding",
        "tokens_per_step",
    )
    for key in numbers:
        assert isinstance(result[key], int | float), key
        assert math.isfinite(result[key]) and result[key] > 0, key
    for key in TIMED:
        assert math.isfinite(result["symmetric"][key]) and result["symmetric"][key] > 0, key
    assert result["step_ms_min"] <= result["step_ms"] <= result["step_ms_max"]
    # 1000 steps x 32 tokens x 50304 logits is below auto's bar for compiling the loss kernel
    assert result["loss_kernel"] == "eager"
    for key in ("compile_s", "cuda_max_memory_allocated_bytes", "noether", "x_paper_code"):
        assert key in result and result[key] is None
    assert result["symmetric"]["compile_s"] is None
    auto = "bf16" if cpu_has_native_bf16() else "fp32"  # train.dtype=auto's rule on this CPU
    assert (result["device"], result["dtype"], result["compile"]) == ("cpu", auto, False)
    assert (result["steps"], result["warmup"], result["matmul_size"]) == (2, 1, MATMUL)
    assert result["sb"] == {"q": True, "k": False, "v": True, "mode": "batch"}
    assert result["tokens_per_step"] == 2 * 16
    assert json.loads(json.dumps(result)) == result  # JSON-ready as it is


def test_derived_figures(result: dict) -> None:
    peak = result["matmul_peak_flops_per_s"]
    for r in (result, result["symmetric"]):
        assert r["tok_per_s"] == result["tokens_per_step"] / (r["step_ms"] / 1e3)
        assert r["achieved_flops_per_s"] == r["model_flops_per_token"] * r["tok_per_s"]
        assert r["mfu"] == r["achieved_flops_per_s"] / peak
    assert result["sb_overhead"] == result["symmetric"]["tok_per_s"] / result["tok_per_s"]
    assert result["loader_over_train"] == result["loader_tok_per_s"] / result["tok_per_s"]
    fp32_gflops = result["matmul_peak_fp32_flops_per_s"] / 1e9
    assert result["tok_per_s_per_fp32_gflops"] == result["tok_per_s"] / fp32_gflops
    if result["dtype"] == "fp32":
        assert result["matmul_peak_fp32_flops_per_s"] == peak


def test_paper_code_configuration_is_recognised() -> None:
    assert _is_paper_code_config(load_config(overrides=["model.preset=tiny"]))
    assert not _is_paper_code_config(load_config(overrides=["model.preset=small"]))
    assert not _is_paper_code_config(load_config(overrides=["optim.name=ecd"]))
    assert not _is_paper_code_config(load_config(overrides=SMALL))


def test_model_flops_per_token_by_hand(result: dict) -> None:
    C, V, T, L = 32, 50304, 16, 1
    block = (
        2 * C  # ln_1 (weight, bias)
        + C * 3 * C + 3 * C  # c_attn
        + C * C + C  # attn c_proj
        + 2 * C  # ln_2
        + C * 4 * C + 4 * C  # c_fc
        + 4 * C  # PReLU slopes
        + 4 * C * C + C  # mlp c_proj
    )  # fmt: skip
    non_embedding = L * block + 2 * C  # + ln_f
    expected = 6 * (non_embedding + C * V) + 12 * L * C * T
    assert expected == 9_741_888
    assert result["model_flops_per_token"] == expected
    assert result["symmetric"]["model_flops_per_token"] == expected  # batch biases: buffers
    assert result["params_non_embedding"] == non_embedding
    cfg = load_config(overrides=SMALL)
    assert model_flops_per_token(GPT(cfg.model, cfg.sb)) == expected


def test_profile_and_table(result: dict) -> None:
    prof = result["profile"]
    assert Path(prof["trace"]).is_file()
    assert json.loads(Path(prof["trace"]).read_text())  # a chrome trace is JSON
    assert 1 <= len(prof["top_ops"]) <= 10
    selfs = [op["self_ms"] for op in prof["top_ops"]]
    assert selfs == sorted(selfs, reverse=True)
    table = format_table(result)
    assert "sb_overhead" in table and "symmetric" in table and prof["top_ops"][0]["name"] in table


@pytest.mark.slow
def test_cli_route(
    one_thread: None, overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="symbreak")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["bench", "train", "--json", "--steps", "1", "--warmup", "0", *overrides, "sb.v=false",
         "train.log_noether=true", "train.log_every=5"]
    )
    assert (args.steps, args.warmup, args.dtype, args.compile) == (1, 0, None, False)
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sb"] == {"q": True, "k": False, "v": False, "mode": "batch"}
    assert out["steps"] == 1 and out["n_embd"] == 32 and out["profile"] is None
    assert math.isfinite(out["sb_overhead"])
    n = out["noether"]  # the cost of train.log_noether, as a share of the same run's steps
    assert n["log_every"] == 5 and n["ms"] > 0
    assert n["overhead"] == n["ms"] / (5 * out["step_ms"])
    assert n["overhead_every_step"] == n["ms"] / out["step_ms"]


def test_bad_arguments_are_refused() -> None:
    parser = argparse.ArgumentParser(prog="symbreak")
    register(parser.add_subparsers(dest="command", required=True))
    for bad in (["--steps", "0"], ["--dtype", "fp16"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "train", *bad])
