"""The optimizer factory: paper defaults, parameter groups, SGDM velocity, schedules, training."""

from __future__ import annotations

import math

import pytest
import torch

from symbreak.config import Config, OptimConfig
from symbreak.data import load_config
from symbreak.model import GPT
from symbreak.optim import (
    ECD,
    build_optimizer,
    lr_at,
    optimizer_step,
    param_groups,
    state_bytes,
)


def tiny_model(seed: int = 0, **overrides) -> tuple[GPT, Config]:
    cfg = load_config(
        overrides=[
            "model.n_layer=1",
            "model.n_embd=32",
            "model.n_head=2",
            "model.vocab_size=64",
            "model.block_size=16",
            "sb.q=true",
            "sb.v=true",
            *[f"{k}={v}" for k, v in overrides.items()],
        ]
    )
    torch.manual_seed(seed)
    return GPT(cfg.model, cfg.sb), cfg


def test_soap_is_the_library_one_with_the_paper_settings():
    from pytorch_optimizer import SOAP

    model, cfg = tiny_model(**{"optim.name": "soap"})
    opt = build_optimizer(model, cfg.optim)
    assert isinstance(opt, SOAP)
    d = opt.defaults
    assert d["lr"] == 3e-4 and d["betas"] == (0.95, 0.95) and d["weight_decay"] == 0.01
    assert d["precondition_frequency"] == 10 and d["max_precondition_dim"] == 10000
    assert d["shampoo_beta"] is None and d["eps"] == 1e-8 and d["correct_bias"] is True
    assert d["merge_dims"] is False and d["precondition_1d"] is False
    assert d["normalize_gradient"] is False


def test_paper_defaults_reach_each_optimizer():
    model, cfg = tiny_model(**{"optim.name": "adamw"})
    adamw = build_optimizer(model, cfg.optim)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["lr"] == 1e-4 and adamw.defaults["betas"] == (0.9, 0.95)
    assert adamw.param_groups[0]["weight_decay"] == 0.01
    model, cfg = tiny_model(**{"optim.name": "sgdm"})
    sgd = build_optimizer(model, cfg.optim)
    assert sgd.defaults["lr"] == 0.03 and sgd.defaults["momentum"] == 0.95
    assert sgd.defaults["nesterov"] is True and sgd.param_groups[0]["weight_decay"] == 0.0
    model, cfg = tiny_model(**{"optim.name": "ecd"})
    ecd = build_optimizer(model, cfg.optim)
    assert isinstance(ecd, ECD)
    g = ecd.param_groups[0]
    assert (g["lr"], g["eta"], g["F0"], g["nu"], g["weight_decay"], g["cons_en"]) == (
        1.0,
        100.0,
        2.0,
        0.0,
        0.0,
        True,
    )


def test_parameter_groups_skip_vectors_and_positions_unless_decay_all():
    model, _ = tiny_model()
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, 0.1, decay_all=False)
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert "wte.weight" in decayed and "blocks.0.attn.c_attn.weight" in decayed
    assert {
        "wpe.weight",
        "blocks.0.mlp.act.weight",
        "blocks.0.ln_1.weight",
        "blocks.0.attn.c_attn.bias",
    } <= kept
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    (everything,) = param_groups(model, 0.1, decay_all=True)
    assert len(everything["params"]) == len(list(model.parameters()))


def test_sgdm_initial_velocity_is_seeded_and_used():
    def run(std: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        model, cfg = tiny_model(**{"optim.name": "sgdm", "optim.init_velocity_std": std})
        opt = build_optimizer(model, cfg.optim, seed=seed)
        buf = opt.state[model.wte.weight]["momentum_buffer"].clone() if std else None
        x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
        model(x, x)[1].backward()
        opt.step()
        return buf, model.wte.weight.detach().clone()

    buf, after = run(0.1, seed=0)
    assert abs(buf.std().item() - 0.1) < 0.005 and abs(buf.mean().item()) < 0.005
    buf2, after2 = run(0.1, seed=0)
    assert torch.equal(buf, buf2) and torch.equal(after, after2)
    buf3, _ = run(0.1, seed=1)
    assert not torch.equal(buf, buf3)
    _, plain = run(0.0, seed=0)
    assert not torch.allclose(after, plain)


def test_ecd_state_is_half_of_adamw():
    sizes = {}
    for name in ("adamw", "ecd", "sgdm"):
        model, cfg = tiny_model(**{"optim.name": name})
        opt = build_optimizer(model, cfg.optim)
        x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
        loss = model(x, x)[1]
        loss.backward()
        optimizer_step(opt, loss.detach())
        sizes[name] = state_bytes(opt)
    params = sum(p.numel() for p in model.parameters()) * 4
    assert sizes["ecd"] == params == sizes["sgdm"]
    assert sizes["adamw"] == 2 * params  # exp_avg and exp_avg_sq (step counters are 0-d)


@pytest.mark.parametrize(
    ("name", "lr"), [("adamw", 1e-2), ("sgdm", 0.3), ("soap", 1e-2), ("ecd", 1.0)]
)
def test_every_optimizer_lowers_the_loss_of_a_tiny_model(name, lr):
    model, cfg = tiny_model(**{"optim.name": name, "optim.lr": lr})
    opt = build_optimizer(model, cfg.optim)
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    model.train()
    for step in range(25):
        model.pin_biases(step)
        loss = model(x, x.roll(-1, 1))[1]
        loss.backward()
        optimizer_step(opt, loss.detach())
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


def _lr(schedule: str, step: int, total: int = 100, **kw) -> float:
    return lr_at(step, OptimConfig(lr=1.0, schedule=schedule, **kw), total)


def test_schedules():
    assert _lr("constant", 0) == _lr("constant", 99) == 1.0
    assert _lr("constant", 0, warmup_steps=10) == pytest.approx(0.1)
    assert _lr("constant", 9, warmup_steps=10) == 1.0
    assert _lr("cosine", 0) == 1.0
    assert _lr("cosine", 50) == pytest.approx(0.5)
    assert _lr("cosine", 99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert _lr("cosine", 50, min_lr_ratio=0.1) == pytest.approx(0.55)
    assert _lr("linear", 25) == pytest.approx(0.75)
    assert _lr("linear", 10, warmup_steps=10) == 1.0
    assert _lr("linear", 55, warmup_steps=10) == pytest.approx(0.5)
    # wsd: stable for the first 80 steps, then linear to 0 over the last 20
    assert _lr("wsd", 79) == 1.0 and _lr("wsd", 80) == 1.0
    assert _lr("wsd", 90) == pytest.approx(0.5) and _lr("wsd", 99) == pytest.approx(0.05)
    lrs = [_lr("cosine", s, warmup_steps=5) for s in range(100)]
    assert max(lrs) == 1.0 and all(v > 0 for v in lrs)


def test_adamw_uses_the_fused_kernel_on_cpu_and_matches_the_foreach_path() -> None:
    (fused_model, cfg), (ref_model, _) = (
        tiny_model(**{"optim.name": "adamw", "optim.lr": "1e-2"}) for _ in range(2)
    )
    fused = build_optimizer(fused_model, cfg.optim)
    assert fused.defaults["fused"] is True
    o = cfg.optim
    ref = torch.optim.AdamW(param_groups(ref_model, o.weight_decay, o.decay_all), lr=o.lr,
                            betas=tuple(o.betas), eps=o.eps, foreach=True)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen) for p in fused_model.parameters()]
    for model, opt in ((fused_model, fused), (ref_model, ref)):
        for _ in range(3):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(fused_model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
