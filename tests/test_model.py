"""The model's symmetries, in float64: what bQ/bV break, what bK cannot, and the sampler."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from symbreak.config import ModelConfig, SBConfig
from symbreak.model import GPT, BiasSampler, FeaturePReLU
from symbreak.model.attention import CPU_BF16_ATTENTION_MIN_TD, _attention

L, H, C, T, V = 2, 4, 32, 12, 97
D = C // H


def make_model(init_seed: int = 0, mlp: str = "dense", **sb_kwargs) -> GPT:
    cfg = ModelConfig(n_layer=L, n_head=H, n_embd=C, block_size=16, vocab_size=V, mlp=mlp,
                      moe_experts=4, moe_top_k=2)  # fmt: skip
    sb = SBConfig(**{"seed": 7, **sb_kwargs})
    torch.manual_seed(init_seed)
    model = GPT(cfg, sb).double()
    with torch.no_grad():  # non-zero qkv biases, so their rotation is exercised too
        for block in model.blocks:
            block.attn.c_attn.bias.normal_(0, 0.1)
    return model.eval()


def random_orthogonal(d: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed


def rotate_qk(model: GPT, layer: int, head: int, R: torch.Tensor, rotate_learned=True) -> None:
    """W_Q -> R W_Q, W_K -> R W_K (and their biases) in one head."""
    attn = model.blocks[layer].attn
    with torch.no_grad():
        for offset in (0, C):  # q rows, then k rows of c_attn
            rows = slice(offset + head * D, offset + (head + 1) * D)
            attn.c_attn.weight[rows] = R @ attn.c_attn.weight[rows]
            attn.c_attn.bias[rows] = R @ attn.c_attn.bias[rows]
        if rotate_learned and attn.bias_q is not None and attn.bias_q.mode == "learned":
            w = attn.bias_q.weight  # (1, 1, 1, D): shared by all heads -> per_head needed
            w[0, head, 0] = R @ w[0, head, 0]


def rotate_vo(model: GPT, layer: int, head: int, R: torch.Tensor) -> None:
    """W_V -> R W_V (and its bias), W_O -> W_O R^T in one head."""
    attn = model.blocks[layer].attn
    rows = slice(2 * C + head * D, 2 * C + (head + 1) * D)
    cols = slice(head * D, (head + 1) * D)
    with torch.no_grad():
        attn.c_attn.weight[rows] = R @ attn.c_attn.weight[rows]
        attn.c_attn.bias[rows] = R @ attn.c_attn.bias[rows]
        attn.c_proj.weight[:, cols] = attn.c_proj.weight[:, cols] @ R.T


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(3))


def logits(model: GPT, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


# ---- symmetries ---------------------------------------------------------------------------


@pytest.mark.parametrize("mlp", ["dense", "moe"])
@pytest.mark.parametrize("rotate", [rotate_qk, rotate_vo])
def test_symmetric_model_is_invariant_under_head_rotations(rotate, mlp, tokens):
    model = make_model(mlp=mlp)
    before = logits(model, tokens)
    R = random_orthogonal(D)
    for layer in range(L):
        rotate(model, layer, head=layer + 1, R=R)
    after = logits(model, tokens)
    assert torch.allclose(before, after, atol=1e-10, rtol=0)
    assert before.abs().max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize(
    ("sb", "rotate"),
    [({"q": True}, rotate_qk), ({"v": True, "v_mean": 0.5}, rotate_vo)],
    ids=["bQ breaks Q-K", "bV breaks V-O"],
)
@pytest.mark.parametrize("mode", ["batch", "fixed"])
@pytest.mark.parametrize("mlp", ["dense", "moe"])
def test_biases_break_the_rotation_symmetry(sb, rotate, mode, mlp, tokens):
    model = make_model(mode=mode, mlp=mlp, **sb)
    before = logits(model, tokens)
    rotate(model, layer=0, head=1, R=random_orthogonal(D))
    after = logits(model, tokens)
    assert (before - after).abs().max() > 1e-4


@pytest.mark.parametrize("sb", [{}, {"q": True, "v": True, "v_mean": 0.5}], ids=["sym", "bQbV"])
def test_permuting_experts_with_the_router_rows_changes_nothing_with_or_without_biases(sb, tokens):
    """A mixture of experts' own, discrete symmetry: relabel the experts (stacked weights and
    router rows alike). The biases act in attention and leave it alone."""
    model = make_model(mlp="moe", **sb)
    before = logits(model, tokens)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        for block in model.blocks:
            for p in block.mlp.parameters():
                p.copy_(p[perm])
    after = logits(model, tokens)
    assert torch.allclose(before, after, atol=1e-12, rtol=0)
    fresh = make_model(mlp="moe", **sb).blocks[0].mlp
    assert not torch.equal(model.blocks[0].mlp.fc_weight, fresh.fc_weight)  # it did permute


def test_a_learned_bias_rotates_with_the_weights_so_the_symmetry_survives(tokens):
    model = make_model(q=True, mode="learned", per_head=True)
    before = logits(model, tokens)
    rotate_qk(model, layer=0, head=2, R=random_orthogonal(D))
    after = logits(model, tokens)
    assert torch.allclose(before, after, atol=1e-10, rtol=0)


@pytest.mark.parametrize("mode", ["batch", "fixed"])
def test_bK_changes_nothing(mode, tokens):
    plain = make_model(q=True, v=True, mode=mode)
    with_k = make_model(q=True, v=True, k=True, k_mean=0.7, mode=mode)
    with_k.load_state_dict(plain.state_dict(), strict=False)
    if mode == "fixed":  # same bQ/bV draws in both models, only bK differs
        for a, b in zip(
            plain.bias_samplers(), [s for s in with_k.bias_samplers() if s.kind != "k"], strict=True
        ):
            b.fixed_draw.copy_(a.fixed_draw)
    # eval mode (mean biases) and a pinned training draw: identical logits
    assert torch.allclose(logits(plain, tokens), logits(with_k, tokens), atol=1e-12, rtol=0)
    for m in (plain, with_k):
        m.train()
        m.pin_biases(5)
    assert torch.allclose(logits(plain, tokens), logits(with_k, tokens), atol=1e-12, rtol=0)
    # ... while the key bias is really there and non-zero
    assert any(s.kind == "k" for s in with_k.bias_samplers())


def test_bV_in_v_equals_bV_added_after_attention(tokens):
    model = make_model(v=True, v_mean=0.5)
    attn = model.blocks[0].attn
    x = torch.randn(3, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = attn(x)
        q, k, v = attn.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(3, T, H, D).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True) + attn.bias_v.mean
        ref = attn.c_proj(y.transpose(1, 2).reshape(3, T, C))
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)


def test_bQ_adds_a_query_independent_logit_bonus():
    """(q + bQ).k = q.k + bQ.k: attention with bQ equals a manual softmax with that bonus."""
    model = make_model(q=True)
    attn = model.blocks[0].attn
    x = torch.randn(2, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        q, k, v = attn.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(2, T, H, D).transpose(1, 2) for t in (q, k, v))
        bq = attn.bias_q.mean  # eval: the mean
        scores = (q @ k.transpose(-1, -2) + (bq @ k.transpose(-1, -2))) / D**0.5
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        ref = attn.c_proj(y.transpose(1, 2).reshape(2, T, C))
        assert torch.allclose(attn(x), ref, atol=1e-12, rtol=0)


# ---- the sampler --------------------------------------------------------------------------


def test_batch_mode_draws_per_step_and_uses_the_mean_in_eval():
    model = make_model(q=True, v=True)
    s = next(model.bias_samplers())
    model.train()
    model.pin_biases(0)
    d0 = s().clone()
    assert torch.equal(s(), d0)  # every micro-batch of a step sees the same draw
    model.pin_biases(1)
    d1 = s().clone()
    assert not torch.equal(d0, d1)
    model.eval()
    assert torch.equal(s(), s.mean) and torch.equal(s(), s.mean)
    assert torch.equal(s.mean, torch.full_like(s.mean, 0.5))


def test_draws_depend_only_on_seed_step_and_layer():
    a = make_model(q=True, v=True)
    torch.manual_seed(12345)  # global RNG must not matter
    b = make_model(q=True, v=True)
    torch.rand(100)
    for m in (a, b):
        m.train()
        m.pin_biases(3)
    draws_a = [s() for s in a.bias_samplers()]
    draws_b = [s() for s in b.bias_samplers()]
    for x, y in zip(draws_a, draws_b, strict=True):
        assert torch.equal(x, y)
    # layers differ from each other, and q differs from v
    assert len({tuple(d.flatten().tolist()) for d in draws_a}) == len(draws_a)


def test_unpinned_training_forwards_resample(tokens):
    model = make_model(q=True, v=True, v_mean=0.5)
    model.train()
    assert not torch.equal(logits(model, tokens), logits(model, tokens))
    model.eval()
    assert torch.equal(logits(model, tokens), logits(model, tokens))


def test_draw_statistics_match_the_paper_defaults():
    s = BiasSampler("q", layer=0, n_head=4, d_head=64, mean=0.5, std=[0.05, 0.15])
    draws = torch.stack([s.draw("step", i) for i in range(4000)]).reshape(4000, 64).double()
    assert torch.allclose(draws.mean(0), torch.full((64,), 0.5, dtype=torch.float64), atol=0.01)
    expected_std = torch.linspace(0.05, 0.15, 64, dtype=torch.float64)
    assert torch.allclose(draws.std(0), expected_std, rtol=0.08)


def test_eval_modes(tokens):
    zero = make_model(q=True, v=True, v_mean=0.5, eval="zero")
    sym = make_model()
    sym.load_state_dict(zero.state_dict())
    assert torch.allclose(logits(zero, tokens), logits(sym, tokens), atol=1e-12, rtol=0)
    sample = make_model(q=True, v=True, v_mean=0.5, eval="sample")
    assert not torch.equal(logits(sample, tokens), logits(sample, tokens))


def test_per_head_gives_each_head_its_own_draw():
    model = make_model(q=True, per_head=True)
    model.train()
    model.pin_biases(0)
    d = next(model.bias_samplers())()
    assert d.shape == (1, H, 1, D)
    assert not torch.equal(d[0, 0], d[0, 1])


def test_fixed_draw_is_saved_and_restored():
    a = make_model(q=True, mode="fixed")
    b = make_model(q=True, mode="fixed", seed=8)
    key = next(k for k in a.state_dict() if k.endswith("fixed_draw"))
    assert not torch.equal(a.state_dict()[key], b.state_dict()[key])
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    # config-derived buffers are not saved: the config rebuilds them
    assert not any(k.endswith((".mean", ".std")) for k in a.state_dict())


# ---- the rest of the architecture ------------------------------------------------------------


def test_feature_prelu_matches_the_definition():
    act = FeaturePReLU(6).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    ref = x.clamp(min=0) + act.weight * x.clamp(max=0)
    assert torch.allclose(act(x), ref, atol=1e-15)
    x.requires_grad_(True)
    act(x).sum().backward()
    assert act.weight.grad is not None and act.weight.grad.shape == (6,)


def test_prelu_slopes_are_initialised_from_the_paper_distribution():
    torch.manual_seed(0)
    act = FeaturePReLU(20000)
    assert abs(act.weight.mean().item() - 0.2) < 0.03
    assert abs(act.weight.std().item() - 1.0) < 0.03


def test_nanogpt_initialisation_and_tied_embeddings():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=12, n_head=4, n_embd=256, block_size=16, vocab_size=V)
    model = GPT(cfg)
    blk = model.blocks[0]
    assert abs(blk.mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert abs(blk.mlp.c_proj.weight.std().item() - 0.02 / (2 * 12) ** 0.5) < 0.0005
    assert abs(blk.attn.c_proj.weight.std().item() - 0.02 / (2 * 12) ** 0.5) < 0.0005
    assert torch.count_nonzero(blk.attn.c_attn.bias) == 0
    # tied: there is no separate output matrix; gradients of the logits reach wte
    assert not any("lm_head" in n for n, _ in model.named_parameters())
    logits_, _ = model(torch.tensor([[1, 2, 3, 4]]))
    logits_[0, -1, 5].backward()  # token 5 is not in the input: only the output use reaches it
    assert model.wte.weight.grad[5].abs().sum() > 0


def test_causality_future_tokens_do_not_change_past_logits():
    model = make_model(q=True, v=True)
    x = torch.randint(0, V, (1, T))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % V
    assert torch.allclose(logits(model, x)[0, :-1], logits(model, y)[0, :-1], atol=1e-12)


def test_gelu_and_no_positional_encoding_build_and_run(tokens):
    cfg = ModelConfig(
        n_layer=1,
        n_head=2,
        n_embd=16,
        block_size=16,
        vocab_size=V,
        activation="gelu",
        pos_encoding="none",
    )
    model = GPT(cfg, SBConfig(q=True, v=True, seed=0))
    logits_, _ = model(tokens)
    _, loss = model(tokens, tokens)
    assert logits_.shape == (3, T, V) and loss.isfinite()
    assert model.wpe is None


def test_sequence_longer_than_block_size_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_deepcopy_keeps_the_sampler_deterministic():
    a = make_model(q=True)
    b = copy.deepcopy(a)
    a.train()
    b.train()
    a.pin_biases(2)
    b.pin_biases(2)
    assert torch.equal(next(a.bias_samplers())(), next(b.bias_samplers())())


# ---- attention dtype on CPU ------------------------------------------------------------------


def _qkv(t: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(2, H, t, D, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def test_short_bf16_attention_on_cpu_runs_in_fp32():
    """Below CPU_BF16_ATTENTION_MIN_TD (T x d_head) the kernel sees fp32 (faster there); the
    result and the gradients come back in bf16, equal to the fp32 computation rounded once."""
    q, k, v = _qkv(T, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = _attention(q, k, v, None, True, 0.0)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, ref.to(torch.bfloat16))
    y.float().sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.bfloat16


def test_long_bf16_attention_keeps_the_bf16_kernel():
    q, k, v = _qkv(CPU_BF16_ATTENTION_MIN_TD // D, torch.bfloat16)
    with torch.no_grad():
        y = _attention(q, k, v, None, True, 0.0)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(y, ref)
