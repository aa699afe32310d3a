"""Symmetry breaking for any Hugging Face causal LM: bQ/bV added by forward hooks.

::

    from symbreak.integrations.hf import apply_symmetry_breaking, pinned_biases
    sb = apply_symmetry_breaking(model, q=True, v=True, v_mean=0.5)   # the sb.* knobs
    for step, batch in enumerate(loader):
        with pinned_biases(model, step):        # one draw per optimizer step (optional)
            for micro in split(batch):          # gradient accumulation: same draw
                model(**micro).loss.backward()
        opt.step(); opt.zero_grad()
    model.eval()                                # evaluation adds the mean <bQ>, <bV>
    remove_symmetry_breaking(model)             # back to the original model

The biases are symbreak's own :class:`~symbreak.model.bias.BiasSampler` modules (same
distributions, modes ``batch``/``fixed``/``learned``, ``per_head``, eval ``mean``/``sample``/
``zero``, draws keyed by ``(seed, step, layer, kind)``), attached to each attention module as
``symbreak_bias_{q,k,v}`` so that ``fixed`` draws and ``learned`` vectors are in the model's
``state_dict``. Forward hooks on the projections add them:

* GPT-2 (``c_attn``, packed ``[q | k | v]``): ``c_attn(x) + [bQ | bK | bV]``, exactly
  symbreak's ``q <- q + bQ``, ``v <- v + bV`` per head.
* Llama, Mistral, Qwen2/3 and relatives (``q_proj``, ``k_proj``, ``v_proj``):
  ``q_proj(x) + bQ`` per query head; ``v_proj(x) + bV`` per *key-value* head, so with grouped-
  query attention (``n_kv < n_heads``) ``sb.per_head`` draws one bV per KV head and every query
  head of a group sees the same value bias, as the model's own v does.

Rotary models. The hook adds bQ *before* RoPE. With ``R_m`` the rotation at position m, the
score of query m and key n becomes ``(R_m (q + bQ)).(R_n k) = q.R_{n-m} k + bQ.R_{n-m} k``:
the query-independent bonus is ``bQ.k`` measured in the frame of the relative offset ``n - m``.
It is a fixed direction for each offset, so RoPE's translation invariance (scores depend only on
``n - m``) is kept. Adding bQ *after* RoPE instead would give ``bQ.R_n k``, a bonus that depends
on the key's absolute position, breaking that invariance; we do not offer it. What the hook
breaks: RoPE already reduces the Q-K rotation symmetry from O(d_head) to the rotations that
commute with every ``R_m``, i.e. one independent 2-D rotation in each frequency plane
(``SO(2)^{d_head/2}``; HF pairs dimension i with i + d_head/2). ``W_Q -> R W_Q``,
``W_K -> R W_K`` for such R maps the bonus to ``(R^T bQ).R_{n-m} k``, which differs unless bQ
has no component in the rotated plane; the paper's bQ (mean 0.5 in every dimension) has one
in every plane, so every remaining direction is broken. bV is not rotated and works as in GPT-2.
No placement of a q bias gives a bonus that ignores positions altogether under RoPE (that needs
the unrotated key, i.e. a change inside the attention scores); but in the slow planes (RoPE
frequency ``base^(-2j/d)`` for large j) ``R_{n-m}`` barely turns across a context, and there
bQ acts as the same fixed direction it is in a model without RoPE.
Qwen3's per-head ``q_norm`` acts after ``q_proj``, so there bQ enters before the norm.

Draws: in ``batch`` mode every training-mode forward draws anew (gradient checkpointing would
re-run the forward with another draw: pin it). :func:`pinned_biases` pins the draw of one
optimizer step for every forward inside it, keyed by (seed, step, layer) as in symbreak's
trainer: every rank and micro-batch agrees and a resumed run redraws the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from symbreak.config import Config
from symbreak.errors import SymbreakError
from symbreak.model.bias import BiasSampler

ATTR = "_symbreak_symmetry_breaking"
KINDS = ("q", "k", "v")


@dataclass
class _Site:
    """One attention module: where its q, k, v come out and how they are laid out in heads."""

    attn: nn.Module
    layer: int
    d_head: int
    heads: dict[str, int]  # kind -> number of heads of that projection's output
    projs: dict[str, nn.Module]  # kind -> module whose output holds it (GPT-2: one for all)
    packed: bool  # GPT-2: [q | k | v] in one output


@dataclass
class SymmetryBreaking:
    """What :func:`apply_symmetry_breaking` added: the samplers and the hooks that use them."""

    samplers: list[BiasSampler] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)

    def pin(self, step: int) -> None:
        for s in self.samplers:
            s.pin(step)

    def unpin(self) -> None:
        for s in self.samplers:
            s.unpin()


def apply_symmetry_breaking(
    model: nn.Module, q: bool = True, v: bool = True, k: bool = False, **sb: Any
) -> SymmetryBreaking:
    """Add unlearned bQ/bV (bK for ablation) to every self-attention layer of ``model``.

    ``sb`` takes the other ``sb.*`` keys by name: ``q_mean``, ``q_std`` (a number or
    ``[lo, hi]``), ``k_mean``, ``k_std``, ``v_mean``, ``v_std``, ``mode`` (batch, fixed,
    learned), ``per_head``, ``eval`` (mean, sample, zero), ``seed`` (default 0); defaults and
    checks are symbreak's (a bad value is a ConfigError naming the key). Call it before building
    the optimizer when ``mode="learned"`` (the bias vectors are new parameters).
    """
    if getattr(model, ATTR, None) is not None:
        raise SymbreakError("symmetry breaking is already applied to this model; remove it first")
    cfg = Config()
    for key, value in {"q": q, "k": k, "v": v, "seed": 0, **sb}.items():
        cfg.set(f"sb.{key}", list(value) if isinstance(value, tuple) else value)
    cfg.resolve(vocab_size=1)  # only sb.* is used here: no vocabulary to find
    c = cfg.sb
    if max(c.q_components, c.v_components) > 1:
        raise SymbreakError(
            "several bias components (sb.q_components/v_components > 1) need symbreak's own GPT: "
            "the draws pick a component per step and sb.eval=mixture runs one forward per "
            "component; use one component here"
        )
    sites = _find_sites(model)
    if not sites:
        raise SymbreakError(
            f"{type(model).__name__} has no supported self-attention (GPT-2 c_attn, or "
            "q_proj/k_proj/v_proj as in Llama, Mistral, Qwen)"
        )
    ref = next(model.parameters())
    handle = SymmetryBreaking()
    for site in sites:
        samplers: dict[str, BiasSampler] = {}
        for kind in KINDS:
            if not getattr(c, kind):
                continue
            s = BiasSampler(
                kind,
                site.layer,
                site.heads[kind],
                site.d_head,
                getattr(c, f"{kind}_mean"),
                getattr(c, f"{kind}_std"),
                mode=c.mode,
                per_head=c.per_head,
                eval_mode=c.eval,
                seed=c.seed,
            ).to(device=ref.device)
            s.train(model.training)
            site.attn.add_module(f"symbreak_bias_{kind}", s)
            samplers[kind] = s
            handle.samplers.append(s)
        handle.hooks += _add_hooks(site, samplers)
    setattr(model, ATTR, handle)
    return handle


def remove_symmetry_breaking(model: nn.Module) -> None:
    """Undo :func:`apply_symmetry_breaking`: hooks and bias modules go, the model is as it was."""
    handle = getattr(model, ATTR, None)
    if handle is None:
        raise SymbreakError("no symmetry breaking to remove from this model")
    for h in handle.hooks:
        h.remove()
    for m in model.modules():
        for kind in KINDS:
            if f"symbreak_bias_{kind}" in m._modules:
                del m._modules[f"symbreak_bias_{kind}"]
    delattr(model, ATTR)


@contextlib.contextmanager
def pinned_biases(model: nn.Module, step: int) -> Iterator[None]:
    """Every training forward inside uses the draw of optimizer step ``step``."""
    handle = getattr(model, ATTR, None)
    if handle is None:
        raise SymbreakError("apply_symmetry_breaking(model, ...) first")
    handle.pin(step)
    try:
        yield
    finally:
        handle.unpin()


# --------------------------------------------------------------------------------------------
# Attention layouts
# --------------------------------------------------------------------------------------------


def _find_sites(model: nn.Module) -> list[_Site]:
    sites: list[_Site] = []
    for m in model.modules():
        if hasattr(m, "c_attn") and hasattr(m, "head_dim") and hasattr(m, "num_heads"):
            if getattr(m, "is_cross_attention", False):
                continue  # only self-attention carries the protocol
            n = m.num_heads
            heads = dict.fromkeys(KINDS, n)
            sites.append(_Site(m, len(sites), m.head_dim, heads, {"qkv": m.c_attn}, packed=True))
        elif all(hasattr(m, f"{kind}_proj") for kind in KINDS):
            d = getattr(m, "head_dim", None)
            if d is None:
                raise SymbreakError(f"{type(m).__name__} has q/k/v projections but no head_dim")
            projs = {kind: getattr(m, f"{kind}_proj") for kind in KINDS}
            heads = {kind: _out_features(p) // d for kind, p in projs.items()}
            sites.append(_Site(m, len(sites), d, heads, projs, packed=False))
    return sites


def _out_features(proj: nn.Module) -> int:
    w = proj.weight
    return w.shape[0] if isinstance(proj, nn.Linear) else w.shape[-1]


def _flat(b: torch.Tensor, n_heads: int, d_head: int) -> torch.Tensor:
    """(1, n, 1, d) with n = 1 or n_heads -> (n_heads * d,), head-major like the projection."""
    return b.expand(1, n_heads, 1, d_head).reshape(n_heads * d_head)


def _add_hooks(site: _Site, samplers: dict[str, BiasSampler]) -> list[Any]:
    if not samplers:
        return []
    if site.packed:

        def packed_hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            parts = []
            for kind in KINDS:
                b = samplers[kind]() if kind in samplers else None
                n = site.heads[kind]
                parts.append(
                    out.new_zeros(n * site.d_head) if b is None else _flat(b, n, site.d_head)
                )
            return out + torch.cat(parts).to(out.dtype)

        return [site.projs["qkv"].register_forward_hook(packed_hook)]

    hooks = []
    for kind, sampler in samplers.items():

        def hook(
            module: nn.Module, args: Any, out: torch.Tensor, s=sampler, n=site.heads[kind]
        ) -> torch.Tensor:
            b = s()
            return out if b is None else out + _flat(b, n, site.d_head).to(out.dtype)

        hooks.append(site.projs[kind].register_forward_hook(hook))
    return hooks
