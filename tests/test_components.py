"""Several bias components per layer (``sb.q_components``), ``sb.eval=mixture`` and the
zero-mean control: K = 1 is today's model bit for bit, the draws follow the mixture, the
mixture evaluation is the average of K explicit forwards, and analysis copes with both."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from symbreak.analysis.alignment import Options, analyze_model
from symbreak.config import ModelConfig, SBConfig
from symbreak.data import config_from_dict
from symbreak.errors import ConfigError, SymbreakError
from symbreak.eval.scoring import BatchLogits
from symbreak.integrations.export import check_exportable
from symbreak.integrations.hf import apply_symmetry_breaking
from symbreak.model import GPT, BiasSampler
from symbreak.model.bias import component_means, std_profile
from symbreak.seeding import keyed_seed
from symbreak.targets import IGNORE_INDEX
from symbreak.train.step import TrainStep
from test_model import random_orthogonal, rotate_qk, rotate_vo

L, H, C, T, V = 2, 4, 32, 12, 97
D = C // H


def make_model(init_seed: int = 0, dtype=torch.float64, **sb) -> GPT:
    cfg = ModelConfig(n_layer=L, n_head=H, n_embd=C, block_size=16, vocab_size=V)
    torch.manual_seed(init_seed)
    model = GPT(cfg, SBConfig(**{"seed": 7, **sb})).to(dtype)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.c_attn.bias.normal_(0, 0.1)
    return model.eval()


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(3))


def five_steps(dtype=torch.float32, **sb) -> tuple[list[float], dict, list[torch.Tensor]]:
    """Losses, final weights and layer-0 bQ draws of 5 AdamW steps (two micro-batches each)."""
    model = make_model(dtype=dtype, q=True, v=True, v_mean=0.5, **sb).train()
    step = TrainStep(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    gen = torch.Generator().manual_seed(1)
    losses, draws = [], []
    for s in range(5):
        x = torch.randint(0, V, (4, T), generator=gen)
        y = torch.randint(0, V, (4, T), generator=gen)
        losses.append(step(s, [(x[:2], y[:2]), (x[2:], y[2:])]).loss)
        draws.append(model.blocks[0].attn.bias_q(2).detach().clone())
    return losses, model.state_dict(), draws


# ---- K = 1 is today's model -----------------------------------------------------------------


def test_one_component_is_bit_identical_to_the_single_mean_model():
    base_losses, base_state, base_draws = five_steps()
    losses, state, draws = five_steps(q_components=1, v_components=1, component_unit="sequence")
    assert losses == base_losses
    assert all(torch.equal(base_state[k], state[k]) for k in base_state)
    assert all(torch.equal(a, b) for a, b in zip(base_draws, draws, strict=True))
    # today's draw, from its definition: mean + std * z, z from the generator of the step's key
    for s, got in enumerate(draws):
        gen = torch.Generator().manual_seed(keyed_seed(7, "q", 0, "step", s))
        z = torch.randn((1, 1, 1, D), generator=gen, dtype=torch.float32)
        want = 0.5 + std_profile([0.05, 0.15], D).float().view(1, 1, 1, D) * z
        assert torch.equal(got, want)


def test_component_means_are_orthogonal_equal_norm_and_start_with_the_single_mean():
    mus = component_means(0.5, H, D, 4, seed=7, kind="q", layer=1)  # (K, n, d)
    assert torch.equal(mus[0], torch.full((H, D), 0.5, dtype=torch.float64))
    gram = torch.einsum("knd,jnd->nkj", mus, mus)
    want = torch.eye(4, dtype=torch.float64) * 0.25 * D
    assert torch.allclose(gram, want.expand(H, 4, 4), atol=1e-12)
    assert not torch.allclose(mus[1, 0], mus[1, 1])  # per head: each head its own set
    assert torch.equal(mus, component_means(0.5, H, D, 4, seed=7, kind="q", layer=1))
    assert not torch.equal(mus, component_means(0.5, H, D, 4, seed=8, kind="q", layer=1))
    # the average (eval=mean) shrinks to |m| sqrt(d / K)
    assert math.isclose(float(mus.mean(0)[0].norm()), 0.5 * math.sqrt(D / 4), rel_tol=1e-12)
    s = BiasSampler("q", 1, H, D, 0.5, 0.1, per_head=True, seed=7, components=4)
    assert torch.equal(s.components[:, :, 0], mus.float())


# ---- the draws follow the mixture -------------------------------------------------------------


@pytest.mark.parametrize("unit", ["batch", "sequence"])
def test_draws_follow_the_mixture(unit):
    k, steps, rows = 4, 3000 if unit == "batch" else 300, 1 if unit == "batch" else 10
    s = BiasSampler("q", 0, 1, D, 0.5, [0.05, 0.15], seed=3, components=k, unit=unit).train()
    mus = s.components[:, 0, 0].double()  # (K, d)
    draws = []
    for step in range(steps):
        s.pin(step, list(range(rows)) if unit == "sequence" else None)
        draws.append(s(rows)[:, 0, 0].double())
    b = torch.cat(draws)  # (N, d)
    n = b.shape[0]
    # components are 0.5 sqrt(d) = 2.8 apart in norm terms, the noise ~0.6: the nearest is k
    which = (b[:, None, :] - mus[None]).norm(dim=-1).argmin(dim=1)
    freq = torch.bincount(which, minlength=k).double() / n
    assert (freq - 1 / k).abs().max() < 4.5 * math.sqrt((1 / k) * (1 - 1 / k) / n)
    std = std_profile([0.05, 0.15], D)
    for c in range(k):
        bc = b[which == c]
        m = bc.shape[0]
        assert ((bc.mean(0) - mus[c]).abs() / (std / math.sqrt(m))).max() < 5
        assert (bc.std(0) / std - 1).abs().max() < 5 * math.sqrt(2 / m) + 0.02


def test_sequence_components_do_not_depend_on_the_micro_batching():
    one, _, _ = five_steps(q_components=4, component_unit="sequence")
    model = make_model(dtype=torch.float32, q=True, v=True, v_mean=0.5, q_components=4,
                       component_unit="sequence").train()  # fmt: skip
    step = TrainStep(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
    gen = torch.Generator().manual_seed(1)
    losses = []
    for s in range(5):
        x = torch.randint(0, V, (4, T), generator=gen)
        y = torch.randint(0, V, (4, T), generator=gen)
        losses.append(step(s, [(x[i : i + 1], y[i : i + 1]) for i in range(4)]).loss)
    assert losses == pytest.approx(one, rel=1e-5)
    # and the rows really choose: the 4 sequences of a step use more than one component
    model.pin_biases(0, [0, 1, 2, 3])
    b = model.blocks[0].attn.bias_q(4)
    assert b.shape == (4, 1, 1, D) and len({tuple(r.flatten().tolist()) for r in b}) > 1


# ---- evaluation: the mixture ---------------------------------------------------------------


def test_mixture_equals_the_average_of_k_explicit_forwards(tokens):
    sb = {"q": True, "v": True, "v_mean": 0.5, "q_components": 4, "v_components": 4}
    model = make_model(eval="mixture", per_head=True, **sb)
    targets = torch.randint(0, V, tokens.shape, generator=torch.Generator().manual_seed(5))
    targets[0, :3] = IGNORE_INDEX
    with torch.no_grad():
        logits, _ = model(tokens)
        _, loss = model(tokens, targets)
    # by hand: K models with sb.eval=mean whose mean buffers hold component k
    probs = []
    for k in range(4):
        ref = make_model(eval="mean", per_head=True, **sb)
        for block in ref.blocks:
            for s in (block.attn.bias_q, block.attn.bias_v):
                s.mean.copy_(s.components[k : k + 1])
        with torch.no_grad():
            probs.append(F.softmax(ref(tokens)[0], dim=-1))
    p = torch.stack(probs).mean(0)
    assert torch.allclose(logits.exp(), p, atol=1e-10, rtol=0)
    valid = targets != IGNORE_INDEX
    want = -p.gather(-1, targets.clamp_min(0)[..., None])[..., 0].log()[valid].mean()
    assert abs(float(loss) - float(want)) < 1e-10
    # scoring (BatchLogits) and sampling see the same distribution
    rows, cols = torch.tensor([0, 2]), torch.tensor([5, 11])
    with torch.no_grad():
        got = BatchLogits(model, tokens).at(rows, cols)
    assert torch.allclose(got.double().softmax(-1), p[rows, cols], atol=1e-6)
    # eval=mean adds the average of the component means
    mean_model = make_model(eval="mean", per_head=True, **sb)
    s = mean_model.blocks[0].attn.bias_q
    assert torch.allclose(s(), s.components.mean(0, keepdim=True))


def test_mixture_with_one_component_equals_mean(tokens):
    a = make_model(q=True, eval="mixture")
    b = make_model(q=True, eval="mean")
    assert not a.mixing
    assert torch.equal(a(tokens)[0], b(tokens)[0])


# ---- symmetry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sb", "rotate"),
    [({"q": True, "q_components": 4}, rotate_qk),
     ({"v": True, "v_mean": 0.5, "v_components": 4}, rotate_vo)],
    ids=["4 bQ components break Q-K", "4 bV components break V-O"],
)  # fmt: skip
@pytest.mark.parametrize("how", ["mixture", "mean"])
def test_components_break_the_rotation_symmetry(sb, rotate, how, tokens):
    model = make_model(eval=how, **sb)
    before = model(tokens)[0]
    rotate(model, layer=0, head=1, R=random_orthogonal(D))
    assert (before - model(tokens)[0]).abs().max() > 1e-4


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sb", "match"),
    [
        ({"q_components": 0}, "sb.q_components: must be at least 1"),
        ({"q_components": 9}, "do not fit the head dimension 8"),
        ({"q_components": 2, "mode": "fixed"}, "need sb.mode=batch"),
        ({"q_components": 2, "mode": "learned"}, "need sb.mode=batch"),
        ({"q_components": 2, "q_mean": 0.0}, "scaled to the norm of sb.q_mean, which is 0"),
        ({"q_components": 2, "v": True, "v_mean": 0.5, "v_components": 3}, "must be equal"),
        ({"v_components": 0}, "sb.v_components: must be at least 1"),
    ],
)
def test_bad_component_settings_fail_in_one_line(sb, match):
    tree = {"model": {"n_layer": 1, "n_head": 4, "n_embd": 32, "vocab_size": 50},
            "sb": {"q": True, **sb}}  # fmt: skip
    with pytest.raises(ConfigError, match=match) as e:
        config_from_dict(tree)
    assert "\n" not in str(e.value)


def test_export_and_hf_refuse_a_mixture_run():
    cfg = config_from_dict(
        {"model": {"vocab_size": 50304}, "sb": {"q": True, "q_components": 4, "eval": "mixture"}}
    )
    for sb_eval in (None, "zero"):
        with pytest.raises(SymbreakError, match="--sb-eval mean") as e:
            check_exportable(cfg, sb_eval)
        assert "\n" not in str(e.value)
    check_exportable(cfg, "mean")  # the average of the component means folds
    with pytest.raises(SymbreakError, match="need symbreak's own GPT"):
        apply_symmetry_breaking(torch.nn.Linear(2, 2), q_components=4)


# ---- analysis --------------------------------------------------------------------------------


def analysis_model(**sb) -> GPT:
    cfg = config_from_dict({"model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64,
                                      "vocab_size": 1024}, "sb": {"q": True, **sb}})  # fmt: skip
    torch.manual_seed(0)
    return GPT(cfg.model, cfg.sb).eval()


FAST = Options(top=20, permutations=50, null_directions=10, min_count=3)


def analysis_tokens() -> torch.Tensor:
    return torch.randint(0, 1024, (3000,), generator=torch.Generator().manual_seed(1))


def test_analysis_probes_every_component_and_the_mean():
    torch.set_num_threads(1)
    result = analyze_model(analysis_model(q_components=3), analysis_tokens(), FAST)
    comps = [c["component"] for c in result["direction"]["components"]]
    assert comps == [0, 1, 2]
    seen = {(h["component"], h["scope"]) for h in result["heads"]}
    assert seen == {(c, s) for c in (0, 1, 2, "mean") for s in ("vocab", "context")}
    norm0 = result["direction"]["components"][0]["layers"][0]["heads"][0]["norm"]
    mean_norm = result["direction"]["layers"][0]["heads"][0]["norm"]
    assert norm0 == pytest.approx(0.5 * 4)  # 0.5 sqrt(16)
    assert mean_norm == pytest.approx(0.5 * 4 / math.sqrt(3), rel=1e-5)


def test_analysis_of_the_zero_mean_control_probes_the_ones_direction():
    torch.set_num_threads(1)
    result = analyze_model(analysis_model(q_mean=0.0), analysis_tokens(), FAST)
    d = result["direction"]
    assert d["zero_mean"] is True and "zero-mean control" in d["source"]
    assert d["layers"][0]["heads"][0]["vector"] == [0.5] * 16
    for h in result["heads"]:
        assert h["selectivity"] is not None and math.isfinite(h["selectivity"])
        assert h["null_percentile"] is not None


@pytest.mark.slow
def test_analyze_command_on_component_and_zero_mean_runs(tmp_path, make_run, capsys):
    import json

    from symbreak.cli import main
    from symbreak.data import prepare_texts

    text = "".join(f"If the cat is {i % 7}, then (x) = {{y}}; the {i % 11} dogs ran.\n"
                   for i in range(300))  # fmt: skip
    prepare_texts([("doc", text)], tmp_path / "data", show_progress=False)

    def run(name: str, **sb) -> str:
        return str(make_run(tmp_path, name, sb=sb, data=tmp_path / "data").path)

    multi = run("multi", q=True, v=True, q_components=3, eval="mixture")
    zero = run("zero", q=True, v=True, q_mean=0.0, v_mean=0.0)
    sym = run("sym", v=True)
    fast = ["--tokens", "3000", "--top", "10", "--permutations", "50", "--null-directions", "10",
            "--min-count", "3", "--device", "cpu"]  # fmt: skip
    assert main(["analyze", multi, *fast, "--out", str(tmp_path / "m")]) == 0
    result = json.loads((tmp_path / "m" / "analysis.json").read_text())
    assert {h["component"] for h in result["heads"]} == {0, 1, 2, "mean"}
    assert (tmp_path / "m" / "report.html").exists()
    assert main(["analyze", zero, *fast, "--baseline", sym, "--out", str(tmp_path / "z")]) == 0
    result = json.loads((tmp_path / "z" / "analysis.json").read_text())
    assert result["direction"]["zero_mean"] and "zero-mean" in result["direction"]["source"]
    assert result["baseline"]["direction"]["layers"] == result["direction"]["layers"]
    for h in result["heads"] + result["baseline"]["heads"]:
        assert math.isfinite(h["selectivity"]) and math.isfinite(h["null_percentile"])
    assert "zero-mean control" in capsys.readouterr().out


def test_report_labels_name_components_and_the_zero_mean():
    from symbreak.experiments.collect import sb_label

    base = {"sb.q": True, "sb.v": True, "sb.v_mean": 0.5}
    assert sb_label(base) == "bQ+bV(mV=0.5)"
    assert sb_label({**base, "sb.q_components": 4}) == "bQx4+bV(mV=0.5)"
    assert sb_label({**base, "sb.q_mean": 0.0, "sb.v_mean": 0.0}) == "bQ+bV(mQ=0)"
