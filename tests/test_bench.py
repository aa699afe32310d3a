"""``symbreak bench optim`` on a one-layer tiny model: the report's keys, ratios and state sizes."""

import argparse
import json

import pytest

from symbreak.bench.optim import bench_optim, format_table
from symbreak.cli.bench import register
from symbreak.data import load_config
from symbreak.errors import ConfigError
from symbreak.model import GPT

OVERRIDES = ["model.n_layer=1"]  # tiny with one block: the step costs stay in milliseconds


@pytest.fixture(scope="module")
def result() -> dict:
    return bench_optim("tiny", steps=3, warmup=2, overrides=OVERRIDES)


def test_report_has_every_key(result: dict) -> None:
    for key in (
        "preset",
        "params",
        "device",
        "torch_threads",
        "steps",
        "adamw_step_ms",
        "sgdm_step_ms",
        "soap_step_ms",
        "ecd_step_ms",
        "ecd_over_adamw",
        "sgdm_over_adamw",
        "soap_over_adamw",
        "state_bytes",
        "ecd_state_over_adamw",
    ):
        assert key in result, key
    assert (result["preset"], result["device"], result["steps"]) == ("tiny", "cpu", 3)
    assert json.loads(json.dumps(result)) == result  # JSON-ready as it is


def test_ratios_are_ratios_of_the_reported_medians(result: dict) -> None:
    adamw = result["adamw_step_ms"]
    # torch's foreach AdamW is timed beside symbreak's fused one, the fair baseline
    assert result["adamw_fused_over_foreach"] == adamw / result["adamw_foreach_step_ms"]
    for name in ("sgdm", "soap", "ecd"):
        assert result[f"{name}_over_adamw"] == result[f"{name}_step_ms"] / adamw
        stats = result["step_ms"][name]
        assert stats["median"] == result[f"{name}_step_ms"]
        assert 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_state_sizes(result: dict) -> None:
    cfg = load_config(overrides=["model.preset=tiny", *OVERRIDES])
    n = sum(p.numel() for p in GPT(cfg.model, cfg.sb).parameters())
    assert result["params"] == n
    sb = result["state_bytes"]
    assert sb["ecd"] * 2 == sb["adamw"] == 8 * n  # one float32 tensor per parameter vs two
    assert sb["sgdm"] == sb["ecd"]
    assert sb["soap"] > sb["adamw"]  # AdamW's moments plus the eigenbases
    assert result["ecd_state_over_adamw"] == 0.5
    assert result["soap_refreshes"] == 0  # calls 3..5; SOAP refreshes on call 11, 21, ...


def test_table_lists_every_optimizer(result: dict) -> None:
    table = format_table(result)
    for name in ("adamw", "sgdm", "soap", "ecd"):
        assert f"\n{name} " in table
    assert "ECD state / AdamW state = 0.500" in table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="symbreak")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_route_with_a_subset(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "optim", "--json", "--preset", "tiny", "--steps", "1", "--warmup", "0"]
    args = parser().parse_args([*argv, "--optimizers", "sgdm,ecd", *OVERRIDES])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["optimizers"] == ["sgdm", "ecd"]
    assert "ecd_step_ms" in out and "sgdm_step_ms" in out
    for key in ("adamw_step_ms", "ecd_over_adamw", "ecd_state_over_adamw", "soap_refreshes"):
        assert key not in out
    assert out["state_bytes"]["sgdm"] == out["state_bytes"]["ecd"]


def test_bad_input_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "optim", "--optimizers", "adam"])
    assert "subset of adamw,sgdm,soap,ecd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["bench"])  # a target is required
    with pytest.raises(ConfigError, match="unknown optimizer"):
        bench_optim("tiny", optimizers=["lion"])


def test_positional_route(capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
            "model.vocab_size=61", "train.batch_size=2", "train.dtype=fp32"]  # fmt: skip
    args = parser().parse_args(["bench", "positional", "--json", "--steps", "1", "--warmup", "0",
                                *tiny])  # fmt: skip
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["step_ms"]) == {"learned", "sinusoidal", "rope", "alibi", "none"}
    assert out["steps"] == 1 and out["ratio_to_none"]["none"] == 1.0
