"""The fused linear cross-entropy against F.cross_entropy, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from symbreak.model.loss import IGNORE_INDEX, linear_cross_entropy


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
