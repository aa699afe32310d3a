"""``apply_symmetry_breaking`` on tiny random GPT-2, Llama and Qwen2 models (no downloads)."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
from torch import nn

from symbreak.errors import ConfigError, SymbreakError
from symbreak.integrations.hf import (
    apply_symmetry_breaking,
    pinned_biases,
    remove_symmetry_breaking,
)

os.environ["HF_HUB_OFFLINE"] = "1"
VOCAB = 64


def tiny(arch: str, seed: int = 0) -> nn.Module:
    """A float64 causal LM with every weight random (so no layout error hides behind zeros)."""
    import transformers as tf

    torch.manual_seed(seed)
    if arch == "gpt2":
        conf = tf.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    else:
        cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config}[arch]
        conf = cls(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention: 2 query heads per KV head
            max_position_embeddings=32,
        )
    model = tf.AutoModelForCausalLM.from_config(conf).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


IDX = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
ARCHS = ["gpt2", "llama", "qwen2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_off_or_removed_leaves_the_model_unchanged(arch: str) -> None:
    model = tiny(arch)
    keys, base = set(model.state_dict()), logits(model, IDX)
    apply_symmetry_breaking(model, q=False, v=False)
    assert torch.equal(logits(model, IDX), base)
    remove_symmetry_breaking(model)
    apply_symmetry_breaking(model, q=True, v=True, v_mean=0.5)
    assert (logits(model, IDX) - base).abs().max() > 1e-3
    with pytest.raises(SymbreakError, match="already applied"):
        apply_symmetry_breaking(model)
    remove_symmetry_breaking(model)
    assert torch.equal(logits(model, IDX), base)
    assert set(model.state_dict()) == keys


def _add_bias_by_hand(proj: nn.Module, values: torch.Tensor, offset: int = 0) -> None:
    """``proj``'s output gets ``values`` added at ``offset..``, one coordinate at a time."""
    if proj.bias is None:
        proj.bias = nn.Parameter(torch.zeros(proj.weight.shape[0], dtype=torch.float64))
    with torch.no_grad():
        for i, x in enumerate(values.tolist()):
            proj.bias[offset + i] += x


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_adds_exactly_the_bias(arch: str) -> None:
    """A fixed per-head draw (different in every head and dimension) in eval mode equals the
    same numbers written into the projection biases by hand, in float64."""
    model = tiny(arch)
    by_hand = copy.deepcopy(model)
    sb = apply_symmetry_breaking(model, q=True, v=True, mode="fixed", per_head=True, seed=3)
    draws = {(s.layer, s.kind): s.fixed_draw.double() for s in sb.samplers}
    for layer in range(2):
        q, v = draws[layer, "q"], draws[layer, "v"]  # (1, n, 1, d) with n = heads of q / of v
        flat_q = torch.cat([q[0, h, 0] for h in range(q.shape[1])])
        flat_v = torch.cat([v[0, h, 0] for h in range(v.shape[1])])
        if arch == "gpt2":
            c_attn = by_hand.transformer.h[layer].attn.c_attn
            assert q.shape[1] == v.shape[1] == 4
            _add_bias_by_hand(c_attn, flat_q, 0)
            _add_bias_by_hand(c_attn, flat_v, 64)
        else:
            attn = by_hand.model.layers[layer].self_attn
            assert (q.shape[1], v.shape[1]) == (4, 2)  # bV per KV head
            _add_bias_by_hand(attn.q_proj, flat_q)
            _add_bias_by_hand(attn.v_proj, flat_v)
    torch.testing.assert_close(logits(model, IDX), logits(by_hand, IDX), atol=1e-12, rtol=0)


def test_training_draws_differ_per_forward_and_repeat_per_key() -> None:
    model = tiny("llama").train()
    apply_symmetry_breaking(model, q=True, v=True)
    a, b = logits(model, IDX), logits(model, IDX)
    assert (a - b).abs().max() > 1e-6  # a fresh draw per training forward
    with pinned_biases(model, 7):
        p1, p2 = logits(model, IDX), logits(model, IDX)
    with pinned_biases(model, 8):
        p3 = logits(model, IDX)
    assert torch.equal(p1, p2) and (p1 - p3).abs().max() > 1e-6
    other = tiny("llama").train()  # same weights, biases applied afresh: same key, same draw
    apply_symmetry_breaking(other, q=True, v=True)
    with pinned_biases(other, 7):
        assert torch.equal(logits(other, IDX), p1)
    model.eval()
    assert torch.equal(logits(model, IDX), logits(model, IDX))  # eval: the mean


def _rotation(d: int, planes: bool, seed: int) -> torch.Tensor:
    """A random rotation of R^d: any orthogonal matrix, or (``planes``) one 2-D rotation per
    RoPE frequency plane (dimensions j and j + d/2, as HF's rotate_half pairs them)."""
    g = torch.Generator().manual_seed(seed)
    if not planes:
        return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    R = torch.zeros(d, d, dtype=torch.float64)
    for j, t in enumerate(torch.rand(d // 2, generator=g, dtype=torch.float64) * 2 * math.pi):
        c, s = math.cos(t), math.sin(t)
        R[j, j], R[j, j + d // 2], R[j + d // 2, j], R[j + d // 2, j + d // 2] = c, -s, s, c
    return R


@torch.no_grad()
def _rotate_qk_head(model: nn.Module, arch: str) -> None:
    """``W_Q -> R W_Q``, ``W_K -> R W_K`` (and their biases) for head 0 of layer 0 (GPT-2), or
    KV head 0 and the two query heads that share it (Llama)."""
    d = 8
    R = _rotation(d, planes=arch != "gpt2", seed=1)
    if arch == "gpt2":
        c = model.transformer.h[0].attn.c_attn  # Conv1D: y = x W + b, W (in, out)
        for cols in (slice(0, d), slice(32, 32 + d)):  # q head 0, k head 0
            c.weight[:, cols] = c.weight[:, cols] @ R.T
            c.bias[cols] = R @ c.bias[cols]
        return
    attn = model.model.layers[0].self_attn
    for proj, heads in ((attn.q_proj, (0, 1)), (attn.k_proj, (0,))):
        for h in heads:
            rows = slice(h * d, (h + 1) * d)
            proj.weight[rows] = R @ proj.weight[rows]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bq_breaks_the_rotation_symmetry(arch: str) -> None:
    model = tiny(arch)
    rotated = copy.deepcopy(model)
    _rotate_qk_head(rotated, arch)
    torch.testing.assert_close(logits(rotated, IDX), logits(model, IDX), atol=1e-10, rtol=0)
    for m in (model, rotated):
        apply_symmetry_breaking(m, q=True, v=False)
    assert (logits(rotated, IDX) - logits(model, IDX)).abs().max() > 1e-4


def test_a_plain_training_loop_learns_with_it() -> None:
    model = tiny("qwen2").float().train()
    sb = apply_symmetry_breaking(model, q=True, v=True, mode="learned")
    assert all(s.weight.requires_grad for s in sb.samplers)
    assert any("symbreak_bias_q.weight" in k for k in model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        with pinned_biases(model, step):
            loss = model(IDX, labels=IDX).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert not torch.allclose(sb.samplers[0].weight, sb.samplers[0].mean)  # learned: moved


def test_bad_knobs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"sb\.mode"):
        apply_symmetry_breaking(tiny("gpt2"), mode="sometimes")
    with pytest.raises(ConfigError, match=r"sb\.q_std"):
        apply_symmetry_breaking(tiny("gpt2"), q_std=[0.1, 0.2, 0.3])
    with pytest.raises(SymbreakError, match="no supported self-attention"):
        apply_symmetry_breaking(nn.Sequential(nn.Linear(2, 2)))
