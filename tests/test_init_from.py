"""``model.init_from``: a symbreak model started from GPT-2 weights or another run computes the
same logits as its source."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from symbreak.config import Config
from symbreak.data import config_from_dict, load_config, prepare_texts
from symbreak.errors import CheckpointError
from symbreak.integrations.export import export_hf
from symbreak.model import GPT
from symbreak.train.checkpoint import load_model_weights, resolve_checkpoint
from symbreak.train.init_from import init_model_from
from symbreak.train.trainer import train

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="symbreak-hf-modules-"))


def tiny_gpt2(path: Path, vocab: int = 96, seed: int = 0, **kw) -> torch.nn.Module:
    """A random GPT2LMHeadModel (every tensor random, biases and LayerNorms included)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    conf = dict(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2) | kw
    hf = GPT2LMHeadModel(GPT2Config(**conf))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.3 * torch.randn_like(p))
    hf.save_pretrained(str(path))
    return hf.eval()


def sb_model(**model_kw) -> GPT:
    base = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "activation": "gelu"}
    cfg = config_from_dict({"model": base | model_kw})
    return GPT(cfg.model, cfg.sb)


def test_gpt2_weights_give_equal_logits(tmp_path: Path) -> None:
    hf = tiny_gpt2(tmp_path / "gpt2")
    # vocab 128 > 96 (padding rows added), context 16 < 32 (first positions used)
    gpt = sb_model(vocab_size=128)
    init_model_from(gpt, tmp_path / "gpt2")
    gpt.eval()
    idx = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gpt(idx)[0][..., :96], hf(idx).logits, atol=1e-5, rtol=0)
        wte = gpt.wte.weight
        torch.testing.assert_close(wte[96:], wte[:96].mean(0).expand(32, -1))


def test_symmetry_breaking_applies_from_step_zero(tmp_path: Path) -> None:
    hf = tiny_gpt2(tmp_path / "gpt2")
    cfg = config_from_dict(
        {
            "model": {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16},
            "sb": {"q": True, "v": True},
        }
    )
    cfg.model.activation, cfg.model.vocab_size = "gelu", 96
    gpt = GPT(cfg.model, cfg.sb)
    init_model_from(gpt, tmp_path / "gpt2")
    idx = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (gpt.eval()(idx)[0] - hf(idx).logits).abs().max() > 1e-3  # <bQ>, <bV> act


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    tiny_gpt2(tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match=r"set model\.activation=gelu"):
        init_model_from(sb_model(activation="prelu", vocab_size=96), tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match=r"n_embd=16 but model\.n_embd=32"):
        init_model_from(sb_model(n_embd=32, vocab_size=96), tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match=r"model\.vocab_size >= 96"):
        init_model_from(sb_model(vocab_size=64), tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match=r"wpe.weight has shape \(32, 16\)"):
        init_model_from(sb_model(vocab_size=96, block_size=64), tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match=r"model\.bias=false"):
        init_model_from(sb_model(vocab_size=96, bias=False), tmp_path / "gpt2")
    tiny_gpt2(tmp_path / "erf", activation_function="gelu")
    with pytest.raises(CheckpointError, match="activation_function='gelu'"):
        init_model_from(sb_model(vocab_size=96), tmp_path / "erf")
    with pytest.raises(CheckpointError, match="does not exist"):
        init_model_from(sb_model(), tmp_path / "nowhere")


def test_from_a_symbreak_run_and_from_a_prelu_export(tmp_path: Path, make_run) -> None:
    run_dir, src, cfg = make_run(
        tmp_path,
        "src",
        model={"n_layer": 2, "n_embd": 16, "block_size": 16},
        sb={"q": True, "v": True, "mode": "learned"},
        checkpoints=((1, None),),
        noise=0.3,
    )
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = src.eval()(idx)[0]
    # Same sb config: everything, learned biases included, comes over.
    same = GPT(cfg.model, cfg.sb)
    init_model_from(same, run_dir)
    with torch.no_grad():
        torch.testing.assert_close(same.eval()(idx)[0], want, atol=0, rtol=0)
    # A batch-mode target cannot hold the source's learned biases: refused, not dropped.
    cfg_b = config_from_dict({"model": cfg.to_dict()["model"], "sb": {"q": True}})
    with pytest.raises(CheckpointError, match=r"bias_q\.weight"):
        init_model_from(GPT(cfg_b.model, cfg_b.sb), run_dir)
    # Export (biases folded into c_attn.bias), then start a bias-free PReLU model from it.
    export_hf(run_dir, tmp_path / "hf")
    plain = GPT(cfg_b.model, Config().sb)
    init_model_from(plain, tmp_path / "hf")
    with torch.no_grad():
        got = plain.eval()(idx)[0]
    torch.testing.assert_close(got[..., :50257], want[..., :50257], atol=1e-5, rtol=0)


def test_trainer_starts_from_init_from(tmp_path: Path) -> None:
    hf = tiny_gpt2(tmp_path / "gpt2", vocab=50257)
    text = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400))
    prepare_texts([("a", text), ("b", text[::-1])], tmp_path / "data", show_progress=False)
    cfg = load_config(
        overrides=[
            "model.n_layer=2",
            "model.n_head=2",
            "model.n_embd=16",
            "model.block_size=16",
            "model.activation=gelu",
            f"model.init_from={tmp_path / 'gpt2'}",
            "sb.q=true",
            f"data.source={tmp_path / 'data'}",
            "optim.name=sgdm",
            "optim.lr=1e-12",
            "train.max_steps=1",
            "train.batch_size=2",
            "train.eval_tokens=64",
            "train.progress=false",
            f"train.out_dir={tmp_path}",
            "train.name=ft",
        ]
    )
    train(cfg)
    gpt = GPT(cfg.model, cfg.sb)
    load_model_weights(gpt, resolve_checkpoint(tmp_path / "ft"))
    want = hf.transformer.h[1].mlp.c_fc.weight.detach().t()
    torch.testing.assert_close(gpt.blocks[1].mlp.c_fc.weight, want, atol=1e-6, rtol=0)
