r"""Noether charges of the attention rotation symmetries, and the laws they obey.

The derivation, with every law, is in ``docs/theory/noether.md`` (the documentation site's
"Noether charges: the derivation" page). In short: per attention head, rotating
``W_Q, W_K`` (sector ``qk``) or ``W_V`` against ``W_O`` (sector ``vo``) by ``R = exp(A)``
leaves every batch's loss unchanged while the unlearned biases bQ, bV are off. For a momentum
``P`` the charge of generator ``A`` is ``Q(A) = <A, L>`` with the antisymmetric ``d x d``
charge matrix ``L = (M - M^T) / 2``::

    M_QK = P_Q W_Q^T + P_K W_K^T + p_cQ c_Q^T + p_cK c_K^T
    M_VO = P_V W_V^T + p_cV c_V^T - W_O^T P_O

:func:`charges` computes ``L`` for every layer and head at once, :func:`tangent` the
generator's tangent ``theta -> A theta``, and :func:`momentum_state_key` which optimizer state
is ``P``. The laws: ECD (``nu = 0``, global projection) multiplies all charges by one number per
step (charges from ``p = -g/|g|`` stay 0); SGD heavy ball gives ``Q(t+1) = mu Q(t)``; Nesterov
leaks ``O(lr^2)`` per step; bQ frees the ``qk`` charges and bV the ``vo`` ones, while bK cancels
in the softmax; AdamW's ``exp_avg`` obeys no law and SOAP is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from symbreak.model import GPT, BiasSampler, CausalSelfAttention

SECTORS = ("qk", "vo")

#: optimizer class name -> (state key of its momentum, how to read the charge)
MOMENTA: dict[str, tuple[str, str]] = {
    "ECD": ("momentum", "ECD momentum p (conserved: law 1)"),
    "SGD": ("momentum_buffer", "SGD momentum buffer (heavy ball: Q(t+1) = mu Q(t))"),
    "AdamW": ("exp_avg", "AdamW exp_avg (not a conserved quantity)"),
    "Adam": ("exp_avg", "Adam exp_avg (not a conserved quantity)"),
}


def momentum_state_key(optimizer: torch.optim.Optimizer) -> tuple[str | None, str]:
    """``(state key, description)`` of the optimizer's momentum; key None when unsupported."""
    name = type(optimizer).__name__
    if name in MOMENTA:
        return MOMENTA[name]
    return None, (
        f"{name} has no momentum with a Noether law (SOAP's update is preconditioned in "
        "per-tensor eigenbases); no charges are computed"
    )


def optimizer_momentum(
    optimizer: torch.optim.Optimizer, key: str
) -> Callable[[nn.Parameter], Tensor | None]:
    """``param -> its momentum`` (None while the optimizer holds none for it)."""

    def get(p: nn.Parameter) -> Tensor | None:
        st = optimizer.state.get(p)
        return None if st is None else st.get(key)

    return get


@dataclass
class Charges:
    """Charge matrices of every layer and head, and the norms of the relative charge.

    ``qk``, ``vo``: ``(n_layer, n_head, d, d)`` antisymmetric ``L``; ``x_norm``, ``z_norm``:
    ``(n_layer, n_head, 2)`` Frobenius norms of the sector's tensors (``[..., 0]`` Q-K,
    ``[..., 1]`` V-O) of the weights ``x`` and of the momenta ``z``.
    """

    qk: Tensor
    vo: Tensor
    x_norm: Tensor
    z_norm: Tensor

    def stacked(self) -> Tensor:
        """``(n_layer, n_head, 2, d, d)``: the sectors in :data:`SECTORS` order."""
        return torch.stack((self.qk, self.vo), dim=2)

    def vector(self) -> Tensor:
        """Every charge of the model, one flat vector (the law-1 direction)."""
        return self.stacked().reshape(-1)

    def magnitude(self) -> Tensor:
        """``|L|_F`` per (layer, head, sector): ``(n_layer, n_head, 2)``."""
        return torch.linalg.matrix_norm(self.stacked())

    def relative(self) -> Tensor:
        """``|L|_F / (|W|_F |P|_F)``; 0 where a norm is 0 (no momentum yet)."""
        den = self.x_norm * self.z_norm
        mag = self.magnitude()
        return torch.where(den > 0, mag / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)

    def rows(self, step: int) -> list[dict[str, object]]:
        """``noether.csv`` rows (one host synchronisation)."""
        both = torch.stack((self.magnitude(), self.relative()), dim=-1).double().cpu().tolist()
        return [
            {"step": step, "layer": l, "head": h, "sector": s, "charge": v[0], "relative": v[1]}
            for l, heads in enumerate(both)
            for h, sectors in enumerate(heads)
            for s, v in zip(SECTORS, sectors, strict=True)
        ]


def attention_layers(model: GPT) -> list[CausalSelfAttention]:
    return [block.attn for block in model.blocks]


def _learned(sampler: BiasSampler | None, n_head: int) -> nn.Parameter | None:
    """A learned, per-head sb bias (it rotates with its head); shared ones break the per-head
    symmetry and are left out (module docstring)."""
    if sampler is None or sampler.mode != "learned" or sampler.weight.shape[1] != n_head:
        return None
    return sampler.weight


def sector_params(attn: CausalSelfAttention) -> dict[str, list[nn.Parameter]]:
    """The parameters each sector's rotations move (heads are slices of them)."""
    H = attn.n_head
    qk = [attn.c_attn.weight]
    vo = [attn.c_attn.weight, attn.c_proj.weight]
    if attn.c_attn.bias is not None:
        qk.append(attn.c_attn.bias)
        vo.append(attn.c_attn.bias)
    qk += [b for b in (_learned(attn.bias_q, H), _learned(attn.bias_k, H)) if b is not None]
    vo += [b for b in (_learned(attn.bias_v, H),) if b is not None]
    return {"qk": qk, "vo": vo}


@torch.no_grad()
def charges(
    model: GPT,
    momentum: Callable[[nn.Parameter], Tensor | None],
    weight: Callable[[nn.Parameter], Tensor | None] | None = None,
) -> Charges:
    """The charge matrices ``L`` of ``omega(x, z) = <𝒜x, z>`` for every layer, head, sector.

    ``z = momentum(param)`` (None: zeros, e.g. no optimizer state yet) and ``x = weight(param)``
    (default: the parameter itself, ``x = theta``: the Noether charge). Vectorised over heads:
    a few batched matmuls per layer, no host synchronisation.
    """
    x_of = weight or (lambda p: p)

    def get(f: Callable[[nn.Parameter], Tensor | None], p: nn.Parameter) -> Tensor | None:
        t = f(p)
        return None if t is None else t.detach()

    def sqn(t: Tensor, dims: tuple[int, ...]) -> Tensor:
        return t.square().sum(dim=dims)

    qks, vos, xns, zns = [], [], [], []
    for attn in attention_layers(model):
        H, d = attn.n_head, attn.d_head
        C = H * d
        w, b, o = attn.c_attn.weight, attn.c_attn.bias, attn.c_proj.weight
        dtype, dev = w.dtype, w.device
        zero_dd = torch.zeros(H, d, d, dtype=dtype, device=dev)
        # squared norms of the sectors' tensors, per head, for the relative charge
        sq = {s: torch.zeros(H, dtype=dtype, device=dev) for s in ("xqk", "zqk", "xvo", "zvo")}

        # W: (3, H, d, C) = [W_Q^h; W_K^h; W_V^h]
        X, Z = get(x_of, w).view(3, H, d, C), get(momentum, w)
        m_qk, m_vo = zero_dd.clone(), zero_dd.clone()
        xs = sqn(X, (3,)).sum(-1)  # (3, H)
        sq["xqk"] += xs[0] + xs[1]
        sq["xvo"] += xs[2]
        if Z is not None:
            Z = Z.view(3, H, d, C)
            m_qk += Z[0] @ X[0].mT + Z[1] @ X[1].mT
            m_vo += Z[2] @ X[2].mT
            zs = sqn(Z, (3,)).sum(-1)
            sq["zqk"] += zs[0] + zs[1]
            sq["zvo"] += zs[2]
        # W_O^h: column block h of c_proj.weight (C, C); WOt[h] = (W_O^h)^T, (H, d, C)
        XO = get(x_of, o).view(C, H, d).permute(1, 2, 0)
        ZO = get(momentum, o)
        sq["xvo"] += sqn(XO, (1, 2))
        if ZO is not None:
            ZO = ZO.view(C, H, d).permute(1, 0, 2)  # (H, C, d) = P_O^h
            m_vo -= XO @ ZO
            sq["zvo"] += sqn(ZO, (1, 2))
        # vector terms z x^T: c_attn.bias (3, H, d) and learned per-head sb biases (H, d)
        vectors: list[tuple[str, Tensor, Tensor | None]] = []
        if b is not None:
            cb, pb = get(x_of, b).view(3, H, d), get(momentum, b)
            pb = None if pb is None else pb.view(3, H, d)
            for i, s in enumerate(("qk", "qk", "vo")):
                vectors.append((s, cb[i], None if pb is None else pb[i]))
        for s, sampler in (("qk", attn.bias_q), ("qk", attn.bias_k), ("vo", attn.bias_v)):
            lp = _learned(sampler, H)
            if lp is not None:
                pz = get(momentum, lp)
                vectors.append((s, get(x_of, lp).view(H, d), None if pz is None else pz.view(H, d)))
        for s, xv, zv in vectors:
            sq["x" + s] += sqn(xv, (1,))
            if zv is not None:
                outer = zv.unsqueeze(-1) * xv.unsqueeze(-2)
                if s == "qk":
                    m_qk += outer
                else:
                    m_vo += outer
                sq["z" + s] += sqn(zv, (1,))
        qks.append(0.5 * (m_qk - m_qk.mT))
        vos.append(0.5 * (m_vo - m_vo.mT))
        xns.append(torch.stack((sq["xqk"], sq["xvo"]), dim=-1).sqrt())
        zns.append(torch.stack((sq["zqk"], sq["zvo"]), dim=-1).sqrt())
    return Charges(torch.stack(qks), torch.stack(vos), torch.stack(xns), torch.stack(zns))


@torch.no_grad()
def tangent(model: GPT, a_qk: Tensor, a_vo: Tensor) -> dict[nn.Parameter, Tensor]:
    """``dtheta = 𝒜theta`` for generators ``a_qk``, ``a_vo`` of shape ``(n_layer, n_head, d,
    d)`` (made antisymmetric here), every head at once: the rotations whose charges
    :func:`charges` computes (tests check that the loss is flat along them)."""
    a_qk = 0.5 * (a_qk - a_qk.mT)
    a_vo = 0.5 * (a_vo - a_vo.mT)
    out: dict[nn.Parameter, Tensor] = {}
    for l, attn in enumerate(attention_layers(model)):
        H, d = attn.n_head, attn.d_head
        C = H * d
        A = torch.stack((a_qk[l], a_qk[l], a_vo[l])).to(attn.c_attn.weight)  # (3, H, d, d)
        w = attn.c_attn.weight
        out[w] = (A @ w.view(3, H, d, C)).reshape_as(w)
        o = attn.c_proj.weight  # dW_O^h = -W_O^h A
        out[o] = -(o.view(C, H, d).transpose(0, 1) @ A[2]).transpose(0, 1).reshape_as(o)
        if attn.c_attn.bias is not None:
            b = attn.c_attn.bias
            out[b] = (A @ b.view(3, H, d, 1)).reshape_as(b)
        for i, sampler in ((0, attn.bias_q), (1, attn.bias_k), (2, attn.bias_v)):
            lp = _learned(sampler, H)
            if lp is not None:
                out[lp] = (A[i] @ lp.view(H, d, 1)).reshape_as(lp)
    return out
