"""Fused output layer + cross-entropy, in row chunks, for the 50k-token vocabulary.

For hidden states ``h`` (N, C), output matrix ``W`` (V, C) and targets ``y``::

    z_i   = W h_i                                   (logits, V of them)
    loss  = (1/N) sum_i [ logsumexp(z_i) - z_i[y_i] ]
    dL/dz_i = (softmax(z_i) - onehot(y_i)) / N
    dL/dh_i = W^T dL/dz_i,     dL/dW = sum_i dL/dz_i h_i^T

The plain path (``F.cross_entropy(h W^T, y)``) stores the full (N, V) logits plus the
log-softmax and its gradient: 3 x N x V floats (600 MB for 8 x 512 tokens), most of the step's
memory traffic on a CPU. Here each chunk of rows is projected, reduced to its loss and turned
into its gradient at once; nothing of size N x V outlives a chunk. The gradients are computed
in the forward pass and handed back, scaled, in ``backward``. No library offers this for CPU
(Liger's kernels are Triton, GPU only), hence our own.

Rows whose target is ``ignore_index`` contribute neither loss nor gradient, and N counts only
the other rows.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
# Rows per chunk: 256 rows x 50304 logits x 4 bytes = 51 MB, large enough for fast matmuls,
# small enough to stay out of the way of the rest of the step.
CHUNK_ROWS = 256


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows, ignore_index, need_grad):  # type: ignore[override]
        # Matmuls run in the compute dtype (autocast's, e.g. bf16, else the inputs'); softmax and
        # sums in at least fp32. Casting h and W once here, with autocast off inside, avoids a
        # cast of the (V, C) weight per chunk.
        dev = h.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
        acc = torch.promote_types(weight.dtype, torch.float32)
        n_rows = h.shape[0]
        valid = targets != ignore_index
        n_valid = valid.sum().clamp(min=1)
        w_c, h_c = weight.to(cdt), h.to(cdt)
        loss = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(h) if need_grad else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_grad else None
        with torch.autocast(dev, enabled=False):
            for start in range(0, n_rows, chunk_rows):
                end = min(start + chunk_rows, n_rows)
                hc, yc, vc = h_c[start:end], targets[start:end], valid[start:end]
                y_safe = torch.where(vc, yc, torch.zeros_like(yc))
                # log p = log_softmax(z): one fused pass that also upcasts bf16 logits to fp32
                logp = torch.log_softmax(hc @ w_c.t(), dim=-1, dtype=acc)  # (n, V)
                logp_y = logp.gather(1, y_safe[:, None]).squeeze(1)
                loss -= (logp_y * vc.to(acc)).sum()
                if need_grad:
                    p = logp.exp_()  # softmax, in place
                    p[torch.arange(end - start, device=h.device), y_safe] -= 1.0
                    p_c = p.to(cdt)
                    # dL/dz = (p - onehot) * scale with scale = valid / N, applied to the small
                    # (n, C) operands rather than to the (n, V) probabilities.
                    scale = (vc.to(acc) / n_valid.to(acc))[:, None]
                    grad_h[start:end] = ((p_c @ w_c).to(acc) * scale).to(h.dtype)
                    grad_w += (p_c.t() @ (hc.to(acc) * scale).to(cdt)).to(acc)
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h * grad_out.to(grad_h.dtype),
            grad_w * grad_out.to(grad_w.dtype),
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_rows: int = CHUNK_ROWS,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean cross-entropy of ``h @ weight.T`` against ``targets``, without (N, V) buffers.

    ``h``: (..., C) hidden states, ``weight``: (V, C), ``targets``: (...) token ids.
    """
    h2 = h.reshape(-1, h.shape[-1])
    y = targets.reshape(-1)
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(h2, weight, y, chunk_rows, ignore_index, need_grad)
