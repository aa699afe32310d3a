"""Per-head keys, read from the model's own forward through the ``attn.key`` seam.

Every :class:`~symbreak.model.attention.CausalSelfAttention` passes its keys
(B, n_head, T, d_head), after ``c_K`` and ``bK``, through an identity module ``attn.key``
right before the attention kernel. :class:`KeyCapture` hooks that module, so the keys analysed
are the ones attention used, not a re-derivation that could drift from the model code.

Two scopes:

* **vocab** (layer 0, exact): ``k_t = W_K^h LN_1(e_t) + c_K^h`` for every token id alone, by
  running block 0's own ``ln_1`` and ``attn`` on one-token sequences. Position is left out
  (``positions="none"``); ``positions="mean"`` adds the mean position embedding
  ``mean_p wpe_p`` to ``e_t`` first.
* **context** (every layer): text runs through the whole model in eval mode and the hook
  accumulates, per token id of the population, the sum of its keys and of the cosine of each
  occurrence's key with ``<bQ>``, plus the bonus ``<bQ>.k / sqrt(d)`` per position. The mean
  bonus of an id is ``<bQ>.(mean key) / sqrt(d)``: the bonus is linear in k, so no
  (tokens x layers x width) tensor is ever kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import torch

from symbreak.model import GPT

KeyFn = Callable[[int, torch.Tensor], None]
VOCAB_CHUNK = 4096  # token ids per vocabulary-level forward


class KeyCapture:
    """Context manager: ``fn(layer, k)`` sees every key tensor (B, H, T, d) the model uses.

    ``layers``: which layers to hook (default all)."""

    def __init__(self, model: GPT, fn: KeyFn, layers: Sequence[int] | None = None) -> None:
        self.model, self.fn = model, fn
        self.layers = range(len(model.blocks)) if layers is None else layers
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> KeyCapture:
        for layer in self.layers:
            seam = self.model.blocks[layer].attn.key
            self._handles.append(
                seam.register_forward_hook(lambda _m, _i, out, layer=layer: self.fn(layer, out))
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@torch.no_grad()
def vocab_keys(model: GPT, ids: torch.Tensor, positions: str = "none") -> torch.Tensor:
    """Layer-0 keys (N, H, d) of token ids alone, from block 0's own modules (see module doc)."""
    if positions not in ("none", "mean"):
        raise ValueError(f"positions must be 'none' or 'mean', got {positions!r}")
    block = model.blocks[0]
    dev = model.wte.weight.device
    out: list[torch.Tensor] = []
    with KeyCapture(model, lambda _layer, k: out.append(k[:, :, 0, :]), layers=[0]):
        for chunk in ids.split(VOCAB_CHUNK):
            x = model.wte(chunk.to(dev))[:, None, :]  # (n, 1, C): one-token sequences
            if positions == "mean" and model.wpe is not None:
                x = x + model.wpe.weight.mean(0)
            block.attn(block.ln_1(x))
    return torch.cat(out).cpu()


@dataclass
class ContextStats:
    """What the in-context pass keeps (float64, CPU)."""

    population: torch.Tensor  # (N,) token ids with count >= min_count, ascending
    counts: torch.Tensor  # (V,) occurrences of every id in the analysed text
    key_sums: torch.Tensor  # (L, N, H, d) sum of keys per population id
    cos_sums: torch.Tensor  # (L, N, H) sum over occurrences of cos(k, <bQ>)
    pos_bonus: torch.Tensor  # (L, H, T) mean bonus by position, over every token
    n_tokens: int

    def mean_keys(self) -> torch.Tensor:
        n = self.counts[self.population].to(torch.float64)
        return self.key_sums / n[None, :, None, None]

    def mean_cos(self) -> torch.Tensor:
        return self.cos_sums / self.counts[self.population].to(torch.float64)[None, :, None]


@torch.no_grad()
def context_stats(
    model: GPT,
    windows: Sequence[torch.Tensor],
    directions: torch.Tensor,
    population: torch.Tensor,
    counts: torch.Tensor,
    tokens_per_forward: int = 8192,
    ctx: contextlib.AbstractContextManager | None = None,
) -> ContextStats:
    """Run ``windows`` (1-D token tensors, each <= block_size) through ``model`` in eval mode
    and accumulate key statistics per population id, layer and head (see the module doc).

    ``directions``: (L, H, d) ``<bQ>``; ``counts``: occurrences per id over all windows;
    ``ctx``: e.g. bf16 autocast around each forward (the keys are then those bf16 attention
    used; every sum is still float64)."""
    was_training = model.training
    model.eval()
    dev = model.wte.weight.device
    n_layer, n_head, d = directions.shape
    n_vocab = counts.numel()
    slot = torch.full((n_vocab,), -1, dtype=torch.long)
    slot[population] = torch.arange(population.numel())
    t_max = max(int(w.numel()) for w in windows)
    key_sums = torch.zeros(n_layer, population.numel(), n_head, d, dtype=torch.float64)
    cos_sums = torch.zeros(n_layer, population.numel(), n_head, dtype=torch.float64)
    pos_sums = torch.zeros(n_layer, n_head, t_max, dtype=torch.float64)
    pos_counts = torch.zeros(t_max, dtype=torch.float64)
    dirs = directions.to(torch.float64)
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    current: dict[str, torch.Tensor] = {}

    def accumulate(layer: int, k: torch.Tensor) -> None:
        # float64 on the CPU from here: sums over many tokens, compared to 1e-10 in tests
        k = k.detach().to("cpu", torch.float64).transpose(1, 2).contiguous()  # (B, T, H, d)
        idx = current["idx"]  # (B, T)
        bonus = (k * dirs[layer]).sum(-1) / d**0.5  # (B, T, H)
        pos_sums[layer, :, : k.shape[1]] += bonus.sum(0).T
        cos = (k * unit[layer]).sum(-1) / k.norm(dim=-1).clamp_min(1e-300)
        s = slot[idx].flatten()
        keep = s >= 0
        # index_put_(accumulate=True), not index_add_: the latter crawls on busy multi-core CPUs
        key_sums[layer].index_put_((s[keep],), k.flatten(0, 1)[keep], accumulate=True)
        cos_sums[layer].index_put_((s[keep],), cos.flatten(0, 1)[keep], accumulate=True)

    # windows of equal length batch together; the (short) last one runs alone
    groups: dict[int, list[torch.Tensor]] = {}
    for w in windows:
        groups.setdefault(int(w.numel()), []).append(w)
    n_tokens = 0
    try:
        with KeyCapture(model, accumulate):
            for length, ws in groups.items():
                batch_size = max(1, tokens_per_forward // length)
                for i in range(0, len(ws), batch_size):
                    idx = torch.stack(ws[i : i + batch_size])
                    current["idx"] = idx
                    with ctx if ctx is not None else contextlib.nullcontext():
                        model.hidden(idx.to(dev))
                    pos_counts[:length] += idx.shape[0]
                    n_tokens += idx.numel()
    finally:
        model.train(was_training)
    return ContextStats(
        population=population,
        counts=counts,
        key_sums=key_sums,
        cos_sums=cos_sums,
        pos_bonus=pos_sums / pos_counts.clamp_min(1),
        n_tokens=n_tokens,
    )
