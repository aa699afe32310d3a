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

Between the matmuls, each chunk's (n, V) elementwise work (the row max, sum of exponentials,
``softmax - onehot`` and the cast back to the matmul dtype) is the memory-bound part of the
step: eager torch makes a pass and an fp32 buffer for each. ``kernel="compiled"`` runs it as
one torch.compile'd function instead, which inductor fuses into a reading pass per reduction
and one writing pass, with no fp32 (n, V) buffer: the output layer + loss of 1024 tokens took
90 instead of 118 ms in bf16 on the 2-core CPU (docs/performance.md, "the compiled loss
kernel"). It needs a C++ compiler at run time; if compiling fails the eager code takes over
after one warning.

Rows whose target is ``ignore_index`` contribute neither loss nor gradient, and N counts only
the other rows; they are dropped before the projection, so they cost nothing either.
"""

from __future__ import annotations

import torch

from symbreak.compiling import CompiledOrEager
from symbreak.targets import IGNORE_INDEX

LOSS_KERNELS = ("eager", "compiled")
# Each chunk's fp32 (rows, V) buffer stays under this many bytes: large enough for fast
# matmuls (512 rows for GPT-2's vocabulary; larger chunks measured faster up to 1024 rows),
# small enough that long micro-batches stay cheap in memory.
CHUNK_BYTES = 128 << 20
MAX_CHUNK_ROWS = 1024


# auto compiles the loss kernel for bf16 on CPU from this many logits (tokens x V) over a run:
# compiling takes 3-6 s and saves ~0.45 ns per logit and step (tiny, 2-core CPU), so this is
# about 2x the break-even (docs/performance.md, "the compiled loss kernel"). In fp32 the matmuls
# dominate and compiling saved only 2%, so auto leaves fp32 eager.
AUTO_COMPILE_LOGITS = 2e10


def choose_loss_kernel(
    setting: str, device_type: str, dtype: torch.dtype, run_logits: float
) -> str:
    """``train.loss_kernel``: "eager"/"compiled" as set; "auto" compiles on CPU in bf16 when the
    run's logits (``run_logits``: tokens x V over the whole run) reach ``AUTO_COMPILE_LOGITS``.
    On CUDA auto stays eager: memory bandwidth there makes the eager passes cheap, and the
    compiled (Triton) path has not been measured on a GPU yet."""
    if setting != "auto":
        return setting
    long_run = run_logits >= AUTO_COMPILE_LOGITS
    return "compiled" if device_type == "cpu" and dtype == torch.bfloat16 and long_run else "eager"


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: the largest power of two whose fp32 (rows, V) buffer fits in
    ``CHUNK_BYTES``, at most ``MAX_CHUNK_ROWS``."""
    fit = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // (4 * vocab_size)))
    return 1 << (fit.bit_length() - 1)


# ---- the elementwise part of one chunk: two implementations of the same maths --------------


def _terms_eager(z: torch.Tensor, y: torch.Tensor, acc: torch.dtype, need_grad: bool):
    """``(nll, g)``: ``nll_i = logsumexp(z_i) - z_i[y_i]`` in ``acc``, and (if ``need_grad``)
    ``g_i = softmax(z_i) - onehot(y_i)`` in z's dtype. ``y`` holds valid ids only."""
    # log p = log_softmax(z): one pass that also upcasts bf16 logits to fp32
    logp = torch.log_softmax(z, dim=-1, dtype=acc)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    if not need_grad:
        return nll, None
    p = logp.exp_()  # softmax, in place
    p[torch.arange(z.shape[0], device=z.device), y] -= 1.0
    return nll, p.to(z.dtype)


def _terms_fusable(z: torch.Tensor, y: torch.Tensor, acc: torch.dtype, need_grad: bool):
    """The same as :func:`_terms_eager`, written for inductor: ``exp(z - m)`` is not shared
    between the sum and ``g`` (sharing it would make inductor store it as an fp32 (n, V)
    buffer); ``g`` recomputes ``exp(z - lse)`` in its writing pass instead."""
    zf = z.to(acc)
    m = zf.amax(dim=1, keepdim=True)
    lse = m + torch.log(torch.exp(zf - m).sum(dim=1, keepdim=True))
    nll = (lse - zf.gather(1, y[:, None])).squeeze(1)
    if not need_grad:
        return nll, None
    onehot = torch.arange(z.shape[1], device=z.device)[None, :] == y[:, None]
    return nll, (torch.exp(zf - lse) - onehot.to(acc)).to(z.dtype)


_compiled: dict[str, CompiledOrEager] = {}  # per device type


def _terms_compiled(z: torch.Tensor, y: torch.Tensor, acc: torch.dtype, need_grad: bool):
    if torch.compiler.is_compiling():  # inside a compiled model (train.compile): inline it
        return _terms_fusable(z, y, acc, need_grad)
    fn = _compiled.get(z.device.type)
    if fn is None:
        # dynamic=True: one kernel serves every chunk height (the last chunk may be shorter).
        fn = _compiled[z.device.type] = CompiledOrEager(
            _terms_fusable,
            "the compiled loss kernel (train.loss_kernel)",
            "train.loss_kernel=eager",
            fallback=_terms_eager,
            dynamic=True,
            fullgraph=True,
        )
    return fn(z, y, acc, need_grad)


_TERMS = {"eager": _terms_eager, "compiled": _terms_compiled}


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows, ignore_index, need_grad, kernel):  # type: ignore[override]
        # Matmuls run in the compute dtype (autocast's, e.g. bf16, else the inputs'); softmax and
        # sums in at least fp32. Casting h and W once here, with autocast off inside, avoids a
        # cast of the (V, C) weight per chunk.
        dev = h.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
        acc = torch.promote_types(weight.dtype, torch.float32)
        terms = _TERMS[kernel]
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
                nll, g = terms(hc @ w_c.t(), y_safe, acc, need_grad)
                loss += (nll * vc.to(acc)).sum()
                if need_grad:
                    # dL/dz = g * scale with scale = valid / N, applied to the small (n, C)
                    # operands rather than to the (n, V) probabilities.
                    scale = (vc.to(acc) / n_valid.to(acc))[:, None]
                    grad_h[start:end] = ((g @ w_c).to(acc) * scale).to(h.dtype)
                    # fp32 += bf16 promotes inside add_: no fp32 (V, C) temporary per chunk
                    grad_w += g.t() @ (hc.to(acc) * scale).to(cdt)
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
            None,
        )


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_rows: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    kernel: str = "eager",
) -> torch.Tensor:
    """Mean cross-entropy of ``h @ weight.T`` against ``targets``, without (N, V) buffers.

    ``h``: (..., C) hidden states, ``weight``: (V, C), ``targets``: (...) token ids.
    ``chunk_rows``: rows per chunk (default: :func:`default_chunk_rows`); ``kernel``: "eager"
    or "compiled" for the chunks' elementwise work (module docstring).
    """
    if kernel not in _TERMS:
        raise ValueError(f"loss kernel must be one of {LOSS_KERNELS}, got {kernel!r}")
    h2 = h.reshape(-1, h.shape[-1])
    y = targets.reshape(-1)
    valid = y != ignore_index
    if not bool(valid.all()) and bool(valid.any()):
        # Only rows with a target are projected: fine-tuning on masked prompts (most rows
        # ignored) then pays the (V, C) output layer for the trained rows alone.
        h2, y = h2[valid], y[valid]
    rows = chunk_rows if chunk_rows is not None else default_chunk_rows(weight.shape[0])
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(h2, weight, y, rows, ignore_index, need_grad, kernel)


def target_logprobs(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None = None
) -> torch.Tensor:
    """``log softmax(h W^T)[y]`` per row, float32 (or the inputs' float64), without (N, V)
    buffers; 0 where the target is ``IGNORE_INDEX``. Evaluation only: no gradient. The
    mixture evaluation of :class:`~symbreak.model.GPT` combines these over components."""
    h2 = h.reshape(-1, h.shape[-1])
    y = targets.reshape(-1)
    rows = chunk_rows if chunk_rows is not None else default_chunk_rows(weight.shape[0])
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    out = torch.zeros(y.shape, dtype=acc, device=h.device)
    with torch.no_grad():
        for lo in range(0, h2.shape[0], rows):
            z = (h2[lo : lo + rows] @ weight.T).to(acc)
            yc = y[lo : lo + rows]
            valid = yc != IGNORE_INDEX
            picked = z.gather(1, yc.clamp_min(0)[:, None])[:, 0]
            out[lo : lo + rows] = torch.where(valid, picked - z.logsumexp(dim=1), 0.0)
    return out.view(targets.shape)
