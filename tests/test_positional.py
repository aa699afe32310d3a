"""Position encodings, masks and residual switches, checked in float64 against plain references."""

from __future__ import annotations

import math
import tomllib

import pytest
import tomli_w
import torch
import torch.nn.functional as F

from symbreak.config import ModelConfig, SBConfig
from symbreak.data import config_from_dict, load_config
from symbreak.data.loader import input_targets, loss_positions
from symbreak.errors import ConfigError
from symbreak.model import GPT
from symbreak.model.loss import IGNORE_INDEX
from symbreak.model.positional import (
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_angles,
    sinusoidal_table,
)

V, T = 61, 10


def make(pe: str = "learned", mask: str = "causal", residual: str = "both", **kw) -> GPT:
    args = dict(n_layer=2, n_head=4, n_embd=16, block_size=12, vocab_size=V)
    args.update(kw)
    cfg = ModelConfig(pos_encoding=pe, mask=mask, residual=residual, **args)
    torch.manual_seed(0)
    model = GPT(cfg, SBConfig(seed=3, q=True, v=True)).double().eval()
    with torch.no_grad():  # non-zero qkv biases and a non-trivial learned table
        for block in model.blocks:
            block.attn.c_attn.bias.normal_(0, 0.1)
    return model


# ---- the encodings against their formulas ----------------------------------------------------


def test_sinusoidal_matches_formula() -> None:
    for dim in (8, 7):
        table = sinusoidal_table(20, dim)
        for k in (0, 1, 5, 19):
            for j in range(dim):
                i = j // 2
                angle = k / 10000 ** (2 * i / dim)
                want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
                assert table[k, j].item() == pytest.approx(want, abs=1e-12)


def test_rope_scores_depend_on_relative_position_only() -> None:
    d = 8
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g)
    k = k.double()
    cos, sin = rope_angles(40, d)

    def rot(x: torch.Tensor, m: int) -> torch.Tensor:  # x at position m
        return apply_rope(x.expand(m + 1, d), cos, sin)[m]

    for delta in (0, 3, -2):
        scores = [rot(q, m) @ rot(k, m - delta) for m in range(5, 20)]
        assert max(scores) - min(scores) < 1e-12
    assert abs(rot(q, 9) @ rot(k, 6) - rot(q, 9) @ rot(k, 7)) > 1e-3  # and it does depend on it
    # a rotation: norms are kept
    assert rot(q, 13).norm().item() == pytest.approx(q.norm().item(), rel=1e-6)


def rope_reference(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Pairs (2i, 2i+1) as complex numbers times exp(i m theta_i)."""
    d = x.shape[-1]
    m = torch.arange(x.shape[-2], dtype=torch.float64)[:, None]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(m * theta), m * theta)).flatten(-2)


def test_rope_matches_complex_rotation() -> None:
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    cos, sin = rope_angles(12, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin), rope_reference(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("n", "want"),
    [
        (1, [2**-8]),
        (2, [2**-4, 2**-8]),
        (8, [2 ** -(h + 1) for h in range(8)]),
        (4, [2**-2, 2**-4, 2**-6, 2**-8]),
        # not powers of two: the slopes of 4 heads, then every other one of 8 heads (1st, 3rd..)
        (6, [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]),
        (12, [2 ** -(h + 1) for h in range(8)] + [2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]),
        (3, [2**-4, 2**-8, 2**-2]),
    ],
)
def test_alibi_slopes(n: int, want: list[float]) -> None:
    torch.testing.assert_close(alibi_slopes(n), torch.tensor(want, dtype=torch.float64))


def test_alibi_bias_and_mask() -> None:
    slopes = alibi_slopes(2)
    b = alibi_bias(slopes, 4, causal=True, dtype=torch.float64)
    assert b[1, 3, 0].item() == -3 * 2**-8 and b[0, 2, 1].item() == -(2**-4)
    assert b[0, 0, 1].item() == float("-inf") and b[0, 2, 2].item() == 0
    bi = alibi_bias(slopes, 4, causal=False, dtype=torch.float64)
    assert bi[0, 0, 3].item() == -3 * 2**-4 == bi[0, 3, 0].item()


# ---- the whole model against a straightforward reference ----------------------------------


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Every equation of gpt.py / attention.py written out with explicit score matrices."""
    cfg = model.cfg
    H, C = cfg.n_head, cfg.n_embd
    d = C // H
    B, n = idx.shape
    x = model.wte.weight[idx]
    if cfg.pos_encoding == "learned":
        x = x + model.wpe.weight[:n]
    if cfg.pos_encoding == "sinusoidal":
        x = x + sinusoidal_table(n, C)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    for block in model.blocks:
        a = block.attn
        h = F.layer_norm(x, (C,), block.ln_1.weight, block.ln_1.bias)
        qkv = h @ a.c_attn.weight.T + a.c_attn.bias
        q, k, v = (t.view(B, n, H, d).transpose(1, 2) for t in qkv.split(C, dim=2))
        q = q + a.bias_q.mean.double()  # eval: mean biases, before RoPE
        v = v + a.bias_v.mean.double()
        if cfg.pos_encoding == "rope":
            q, k = rope_reference(q), rope_reference(k)
        s = q @ k.transpose(-1, -2) / math.sqrt(d)
        if cfg.pos_encoding == "alibi":
            n0 = 2 ** math.floor(math.log2(H))
            slopes = [2 ** (-8 * (h + 1) / n0) for h in range(n0)]
            slopes += [2 ** (-8 * (h + 1) / (2 * n0)) for h in range(0, 2 * n0, 2)][: H - n0]
            s = s - torch.tensor(slopes, dtype=torch.float64)[:, None, None] * (i - j).abs()
        if cfg.mask == "causal":
            s = s.masked_fill(j > i, float("-inf"))
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, n, C)
        y = y @ a.c_proj.weight.T + a.c_proj.bias
        x = x + y if cfg.residual in ("both", "attn") else y
        h = F.layer_norm(x, (C,), block.ln_2.weight, block.ln_2.bias)
        y = block.mlp(h)
        x = x + y if cfg.residual in ("both", "mlp") else y
    x = F.layer_norm(x, (C,), model.ln_f.weight, model.ln_f.bias)
    return x @ model.wte.weight.T


@pytest.mark.parametrize("pe", ["learned", "sinusoidal", "rope", "alibi", "none"])
@pytest.mark.parametrize("mask", ["causal", "bidirectional"])
def test_model_matches_reference(pe: str, mask: str) -> None:
    kw = {"n_head": 3, "n_embd": 18} if pe == "alibi" else {}  # 3 heads: not a power of two
    model = make(pe, mask, **kw)
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(idx)[0], reference_logits(model, idx), rtol=0, atol=1e-10)


@pytest.mark.parametrize("residual", ["attn", "mlp", "none"])
def test_residual_switches_match_reference(residual: str) -> None:
    model = make("learned", "causal", residual)
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(idx)[0], reference_logits(model, idx), rtol=0, atol=1e-10)


# ---- bidirectional training: no target is visible to its own prediction -------------------


@pytest.mark.parametrize(
    ("mask", "source"),
    [("causal", "text"), ("bidirectional", "text"), ("bidirectional", "addition")],
)
def test_no_target_leaks_into_its_prediction(mask: str, source: str) -> None:
    """Changing a trained target token (which sits in the input at t + 1) never changes the
    prediction of that target, and the loss is the cross-entropy of those predictions, each
    made from the prefix x_0..x_t alone (a float64 reference, one position at a time)."""
    T13 = 26  # two addition problems per window
    model = make("none", mask, n_layer=3, block_size=T13).double()
    g = torch.Generator().manual_seed(4)
    w = torch.randint(0, V, (3, T13 + 1), generator=g)
    positions = loss_positions(T13, mask, "addition" if source == "addition" else "shakespeare")
    x, y = input_targets(w, positions)
    trained = torch.ones(T13, dtype=torch.bool) if positions is None else positions
    if source == "addition":  # t mod 13 in 7..10: the four answer digits of each problem
        assert trained.nonzero().flatten().tolist() == [7, 8, 9, 10, 20, 21, 22, 23]
    elif mask == "bidirectional":
        assert trained.nonzero().flatten().tolist() == [T13 - 1]

    def prediction(xx: torch.Tensor, t: int) -> torch.Tensor:  # the logits that predict y_t
        return model(xx if mask == "causal" else xx[:, : t + 1])[0][:, t]

    ces = []
    for t in trained.nonzero().flatten().tolist():
        ref = prediction(x, t)
        ces.append(F.cross_entropy(ref, y[:, t], reduction="none"))
        if t + 1 < T13:
            x2 = x.clone()
            x2[:, t + 1] = (x2[:, t + 1] + 1 + torch.randint(0, V - 1, (3,), generator=g)) % V
            assert (prediction(x2, t) - ref).abs().max().item() == 0.0
    if mask == "bidirectional":  # why the full-window logits must not be trained on
        full = model(x)[0]
        x2 = x.clone()
        x2[:, 1] = (x2[:, 1] + 1) % V
        assert (model(x2)[0][:, 0] - full[:, 0]).abs().max().item() > 1e-6
    want = torch.cat(ces).mean()
    assert model(x, y)[1].item() == pytest.approx(want.item(), rel=1e-10)


def test_bidirectional_loss_ignores_untrained_targets_and_backpropagates() -> None:
    model = make("learned", "bidirectional")
    w = torch.randint(0, V, (2, T + 1), generator=torch.Generator().manual_seed(5))
    x, y = input_targets(w, loss_positions(T, "bidirectional", "shakespeare"))
    assert (y[:, :-1] == IGNORE_INDEX).all() and (y[:, -1] >= 0).all()
    model.train()
    model.pin_biases(0)  # the same bias draw for every forward
    loss = model(x, y)[1]
    loss.backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0
    # targets outside the trained positions change nothing; all-valid targets would cost
    # one prefix forward per position and give another loss
    y_all = w[:, 1:]
    assert model(x, y_all)[1].item() != pytest.approx(loss.item(), rel=1e-6)
    y_all2 = y_all.clone()
    y_all2[:, :-1] = IGNORE_INDEX
    assert model(x, y_all2)[1].item() == pytest.approx(loss.item(), rel=1e-12)


def test_addition_bidirectional_needs_whole_problems_per_window() -> None:
    base = ["data.source=addition", "model.mask=bidirectional"]
    with pytest.raises(ConfigError, match=r"model\.block_size.*multiple of 13"):
        load_config(None, [*base, "model.block_size=24"])
    assert load_config(None, [*base, "model.block_size=26"]).model.block_size == 26
    assert load_config(None, ["data.source=addition", "model.block_size=24"])  # causal: any


# ---- config: defaults unchanged, impossible combinations named -----------------------------


def test_old_configs_get_todays_behaviour_and_checkpoint_keys_do_not_change() -> None:
    old = tomllib.loads('[model]\npreset = "tiny"\npos_encoding = "learned"\n')
    cfg = config_from_dict(old)  # model.vocab_size from the data
    assert (cfg.model.pos_encoding, cfg.model.mask, cfg.model.residual) == (
        "learned",
        "causal",
        "both",
    )
    assert cfg.model.rope_base == 10000.0
    nope = set(make("none").state_dict())
    # Only a learned table adds a tensor; fixed tables, RoPE angles, ALiBi slopes are derived.
    assert set(make("learned").state_dict()) - nope == {"wpe.weight"}
    for pe in ("sinusoidal", "rope", "alibi"):
        assert set(make(pe).state_dict()) == nope
    for mask, residual in (("bidirectional", "none"), ("causal", "attn")):
        assert set(make("learned", mask, residual).state_dict()) - nope == {"wpe.weight"}


def test_new_keys_print_and_validate() -> None:
    cfg = load_config(None, ["model.pos_encoding=rope", "model.mask=bidirectional"])
    text = cfg.to_toml()
    assert 'pos_encoding = "rope"' in text and 'mask = "bidirectional"' in text
    assert 'residual = "both"' in text
    with pytest.raises(ConfigError, match=r"model\.pos_encoding.*odd"):
        load_config(None, ["model.pos_encoding=rope", "model.n_head=4", "model.n_embd=36"])
    with pytest.raises(ConfigError, match=r"model\.pos_encoding='rotary' is not one of"):
        load_config(None, ["model.pos_encoding=rotary"])
    with pytest.raises(ConfigError, match=r"model\.mask"):
        load_config(None, ["model.mask=prefix"])
    with pytest.raises(ConfigError, match=r"model\.residual"):
        load_config(None, ["model.residual=attention"])
    # ALiBi serves every head count (the interpolation rule covers non-powers of two)
    load_config(None, ["model.pos_encoding=alibi", "model.n_head=5", "model.n_embd=40"])


def test_puzzle_scoring_refuses_bidirectional_models() -> None:
    from symbreak.errors import SymbreakError
    from symbreak.eval.puzzles import Item
    from symbreak.eval.scoring import score_items

    item = Item(category="copy", prompt="a b", expected=" c")
    with pytest.raises(SymbreakError, match=r"model\.mask=bidirectional"):
        score_items(make("none", "bidirectional"), [item])
    assert score_items(make("none", "bidirectional"), []).results == []


def test_a_run_written_before_the_new_keys_loads_unchanged(tmp_path) -> None:
    """config.toml and state.json without model.mask/residual/rope_base: today's model."""
    from symbreak.runs import load_run
    from symbreak.train.checkpoint import save_checkpoint

    cfg = load_config(None, ["model.n_layer=1", "model.n_head=2", "model.n_embd=16",
                             "model.block_size=8", "model.vocab_size=61"])  # fmt: skip
    tree = cfg.to_dict()
    for key in ("mask", "residual", "rope_base"):
        del tree["model"][key]
    for key in ("addition_train", "addition_val", "addition_reverse", "addition_seed"):
        del tree["data"][key]
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.toml").write_text(tomli_w.dumps(tree))
    torch.manual_seed(0)
    model = GPT(cfg.model, cfg.sb).eval()
    save_checkpoint(run, 2, model, None, {"config": tree})
    loaded = load_run(run)
    assert (loaded.cfg.model.mask, loaded.cfg.model.residual) == ("causal", "both")
    x = torch.randint(0, 61, (2, 8))
    torch.testing.assert_close(loaded.model(x)[0], model(x)[0], rtol=0, atol=0)


def test_positional_bench_reports_every_encoding() -> None:
    from symbreak.bench.positional import bench_positional, format_table

    r = bench_positional(["model.n_layer=1", "model.n_head=2", "model.n_embd=16",
                          "model.block_size=16", "model.vocab_size=61", "train.batch_size=2",
                          "train.dtype=fp32"], steps=1, warmup=0)  # fmt: skip
    assert set(r["ratio_to_none"]) == {"learned", "sinusoidal", "rope", "alibi", "none"}
    assert r["ratio_to_none"]["none"] == 1.0 and "alibi" in format_table(r)


def test_with_rope_bk_is_rotated_and_no_longer_cancels() -> None:
    """bK before the rotation: an ordinary k bias of a RoPE model (documented), unlike NoPE."""

    def logits(pe: str, k: bool) -> torch.Tensor:
        cfg = ModelConfig(pos_encoding=pe, n_layer=1, n_head=2, n_embd=16, block_size=12,
                          vocab_size=V)  # fmt: skip
        torch.manual_seed(0)
        model = GPT(cfg, SBConfig(seed=3, q=True, k=k)).double().eval()
        return model(torch.arange(T)[None] % V)[0]

    torch.testing.assert_close(logits("none", True), logits("none", False), rtol=0, atol=1e-12)
    assert (logits("rope", True) - logits("rope", False)).abs().max() > 1e-6
