"""The fused linear cross-entropy against F.cross_entropy, in float64, with both chunk kernels."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.exc import TorchDynamoException

import symbreak.model.loss as loss_mod
from symbreak.model.loss import (
    AUTO_COMPILE_LOGITS,
    CHUNK_BYTES,
    IGNORE_INDEX,
    choose_loss_kernel,
    default_chunk_rows,
    linear_cross_entropy,
)


def _inputs(n=37, c=8, v=29, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(v, c, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, v, (n,), generator=g)
    return h, w, y


@pytest.mark.parametrize("chunk_rows", [1, 5, 37, 256])
def test_loss_and_gradients_match_the_plain_path(chunk_rows):
    h, w, y = _inputs()
    y[3] = IGNORE_INDEX
    y[10] = IGNORE_INDEX
    ref = F.cross_entropy(h @ w.t(), y, ignore_index=IGNORE_INDEX)
    gh_ref, gw_ref = torch.autograd.grad(3.0 * ref, (h, w))
    out = linear_cross_entropy(h, w, y, chunk_rows=chunk_rows)
    gh, gw = torch.autograd.grad(3.0 * out, (h, w))
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert torch.allclose(gh, gh_ref, atol=1e-12, rtol=0)
    assert torch.allclose(gw, gw_ref, atol=1e-12, rtol=0)


def test_batched_shapes_and_no_grad():
    h, w, y = _inputs(n=24)
    with torch.no_grad():
        a = linear_cross_entropy(h.view(4, 6, -1), w, y.view(4, 6))
    assert torch.allclose(a, F.cross_entropy(h @ w.t(), y), atol=1e-12)
    assert not a.requires_grad


def test_float32_agrees_with_float64():
    h, w, y = _inputs(n=300, c=64, v=1000)
    out32 = linear_cross_entropy(h.float(), w.float(), y)
    assert abs(out32.item() - F.cross_entropy(h @ w.t(), y).item()) < 1e-4


# ---- the compiled chunk kernel (train.loss_kernel) ------------------------------------------


@pytest.fixture
def fresh_kernels(monkeypatch):
    """An empty compiled-kernel cache, so a test's compile (or failure) stays its own."""
    monkeypatch.setattr(loss_mod, "_compiled", {})


@pytest.mark.slow
def test_compiled_kernel_matches_the_plain_path_in_float64():
    # One compile (float64, with gradients) serves every chunk height: chunks of 16 leave a
    # last chunk of 5 rows.
    h, w, y = _inputs()
    y[3] = IGNORE_INDEX
    ref = F.cross_entropy(h @ w.t(), y, ignore_index=IGNORE_INDEX)
    gh_ref, gw_ref = torch.autograd.grad(3.0 * ref, (h, w))
    out = linear_cross_entropy(h, w, y, chunk_rows=16, kernel="compiled")
    gh, gw = torch.autograd.grad(3.0 * out, (h, w))
    assert not loss_mod._compiled["cpu"].failed  # it really compiled, no silent fallback
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert torch.allclose(gh, gh_ref, atol=1e-12, rtol=0)
    assert torch.allclose(gw, gw_ref, atol=1e-12, rtol=0)


@pytest.mark.slow
def test_compiled_kernel_tracks_the_eager_one_in_bf16():
    h, w, y = _inputs(n=70, c=16, v=300)
    h32, w32 = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    res = {}
    for kernel in ("eager", "compiled"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = linear_cross_entropy(h32, w32, y, chunk_rows=32, kernel=kernel)
        res[kernel] = (out, *torch.autograd.grad(out, (h32, w32)))
    for a, b in zip(res["eager"], res["compiled"], strict=True):
        # both cast the same bf16 gradients; they differ only in fp32 summation order
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch, fresh_kernels):
    def broken_compile(fn, **kw):
        def run(*a, **k):
            # what inductor raises on a machine without a C++ compiler, as dynamo's error type
            raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    h, w, y = _inputs()
    with pytest.warns(RuntimeWarning, match=r"loss_kernel\): compiling failed .*C.. compiler"):
        a = linear_cross_entropy(h, w, y, kernel="compiled")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call neither retries nor warns again
        b = linear_cross_entropy(h, w, y, kernel="compiled")
    ref = F.cross_entropy(h @ w.t(), y)
    assert torch.allclose(a, ref, atol=1e-12) and torch.allclose(b, ref, atol=1e-12)


def test_unknown_kernel_is_refused():
    h, w, y = _inputs()
    with pytest.raises(ValueError, match="loss kernel must be one of"):
        linear_cross_entropy(h, w, y, kernel="triton")


def test_auto_compiles_only_long_bf16_cpu_runs():
    long, short = AUTO_COMPILE_LOGITS, AUTO_COMPILE_LOGITS / 2
    bf16, fp32 = torch.bfloat16, torch.float32
    assert choose_loss_kernel("auto", "cpu", bf16, long) == "compiled"
    assert choose_loss_kernel("auto", "cpu", bf16, short) == "eager"
    assert choose_loss_kernel("auto", "cpu", fp32, long) == "eager"
    assert choose_loss_kernel("auto", "cuda", bf16, long) == "eager"
    assert choose_loss_kernel("compiled", "cuda", fp32, 0) == "compiled"
    assert choose_loss_kernel("eager", "cpu", bf16, long) == "eager"


def test_default_chunk_rows():
    assert default_chunk_rows(50304) == 512  # 512 x 50304 x 4 B = 103 MB <= CHUNK_BYTES
    assert default_chunk_rows(85) == 1024  # character vocabularies: capped
    assert default_chunk_rows(10**9) == 1
    for v in (1000, 50304, 200_000):
        rows = default_chunk_rows(v)
        assert rows & (rows - 1) == 0 and 4 * rows * v <= CHUNK_BYTES
