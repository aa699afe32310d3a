"""Config: TOML + overrides, presets, and errors that name the key."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from symbreak.allocator import reuse_freed_memory
from symbreak.config import PRESETS, all_keys
from symbreak.data import load_config
from symbreak.errors import ConfigError


def test_defaults_resolve_to_the_tiny_preset_and_paper_optimizer_defaults():
    cfg = load_config()
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.block_size) == (
        4,
        4,
        128,
        128,
    )
    assert cfg.optim.name == "adamw" and cfg.optim.lr == 1e-4 and cfg.optim.betas == [0.9, 0.95]
    assert cfg.optim.weight_decay == 0.01
    assert cfg.sb.q_mean == 0.5 and cfg.sb.q_std == [0.05, 0.15] and cfg.sb.v_std == 0.05
    assert cfg.sb.seed == cfg.train.seed


def test_paper_preset_124m():
    cfg = load_config(overrides=["model.preset=124m"])
    m = cfg.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size) == (12, 12, 768, 512, 50304)
    assert m.activation == "prelu" and m.pos_encoding == "learned"
    assert set(PRESETS) == {"tiny", "small", "124m", "355m", "774m", "1.5b"}


@pytest.mark.parametrize(
    ("name", "lr", "wd"),
    [("adamw", 1e-4, 0.01), ("sgdm", 0.03, 0.0), ("soap", 3e-4, 0.01), ("ecd", 1.0, 0.0)],
)
def test_optimizer_defaults_follow_the_paper(name, lr, wd):
    cfg = load_config(overrides=[f"optim.name={name}"])
    assert cfg.optim.lr == lr and cfg.optim.weight_decay == wd


def test_toml_then_overrides_take_precedence(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[model]\nn_layer = 3\n[sb]\nq = true\nq_std = 0.1\n[train]\nname = "x"\n')
    cfg = load_config(f, ["model.n_layer=5", "sb.v_mean=0.5", "optim.F0=auto", "train.name=007"])
    assert cfg.model.n_layer == 5 and cfg.model.n_head == 4  # rest of the preset kept
    assert cfg.sb.q and cfg.sb.q_std == 0.1 and cfg.sb.v_mean == 0.5
    assert cfg.optim.F0 == "auto"
    assert cfg.train.name == "007"  # a str field keeps the text, not the int 7


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = load_config(overrides=["sb.q=true", "optim.name=sgdm", "model.preset=small"])
    f = tmp_path / "config.toml"
    f.write_text(cfg.to_toml())
    assert load_config(f) == cfg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optim.nme=sgdm"], "optim.nme"),
        (["optim.nme=sgdm"], "did you mean 'optim.name'"),
        (["modle.n_layer=2"], "modle.n_layer"),
        (["sb.q=maybe"], "sb.q"),
        (["train.batch_size=3.5"], "train.batch_size"),
        (["model.n_head=5"], "model.n_head"),
        (["model.activation=relu"], "model.activation"),
        (["sb.q_std=[0.1]"], "sb.q_std"),
        (["train.batch_size=8", "train.micro_batch_size=3"], "train.micro_batch_size"),
        (["optim.F0=lots"], "optim.F0"),
        (["train.device=tpu"], "train.device"),
        (["justtext"], "section.key=value"),
        (["optim.lr=-1"], "optim.lr"),
    ],
)
def test_config_errors_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        load_config(overrides=overrides)


def test_toml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[modle]\nn_layer = 2\n")
    with pytest.raises(ConfigError, match=r"unknown section \[modle\]"):
        load_config(unknown)


def test_token_budget_sets_the_step_count():
    cfg = load_config(overrides=["train.max_tokens=10000", "train.batch_size=4"])
    assert cfg.tokens_per_step == 4 * 128
    assert cfg.total_steps == 20  # ceil(10000 / 512)


def test_every_key_is_documented_in_the_configuration_page():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "reference" / "configuration.md").read_text()
    missing = [k for k, _, _ in all_keys() if f"`{k}`" not in page]
    assert not missing, f"docs/reference/configuration.md lacks {missing}"


@pytest.mark.slow
def test_cli_config_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "symbreak", "train", "model.n_head=5", f"train.out_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.n_embd" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing written


def test_print_config(capsys):
    from symbreak.cli import main

    assert main(["train", "--print-config", "sb.q=true"]) == 0
    out = capsys.readouterr().out
    assert "[sb]" in out and "q = true" in out


def test_reuse_freed_memory_respects_glibc_settings(monkeypatch):
    """The allocator tweak every command applies: on Linux/glibc it takes; a user's own
    MALLOC_*_THRESHOLD_ wins (and is the opt-out)."""
    apply = reuse_freed_memory.__wrapped__  # uncached
    if sys.platform.startswith("linux") and ctypes.util.find_library("c"):
        assert apply() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert apply() is False


def test_loss_kernel_setting_is_checked():
    assert load_config().train.loss_kernel == "auto"
    with pytest.raises(ConfigError, match=r"train\.loss_kernel"):
        load_config(overrides=["train.loss_kernel=triton"])


@pytest.mark.slow
def test_the_cli_and_the_model_start_without_torch_dynamo():
    """`symbreak --help` imports no torch at all, and importing the model does not pull in
    torch._dynamo (about 1 s): both are loaded only by commands that use them."""
    code = (
        "import sys, symbreak.cli; assert 'torch' not in sys.modules; "
        "import symbreak.model; assert 'torch._dynamo' not in sys.modules, 'dynamo imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
