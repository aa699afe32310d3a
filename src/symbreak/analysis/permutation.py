"""The exact permutation test of the positional symmetry.

For a sequence ``x_1..x_n`` and a permutation ``pi`` of ``1..n-1`` (the last token stays put),
compare the output at position n before and after shuffling::

    rel(x, pi) = |f(x)_n - f(x_pi)_n| / |f(x)_n|       (Euclidean norms of the logit vectors)

and report the largest ``rel`` over sequences and permutations, per length n.

Why the answer is exact. Without a position encoding, attention treats its keys as a set:
permuting the keys and values of a query (with their mask entries) leaves its output unchanged,
and every other operation acts on each position alone. So:

* NoPE + bidirectional: every layer maps a permuted input to the equally permuted output
  (equivariance); position n is not moved, so its output is invariant - at any depth.
* NoPE + causal, one layer: position n attends to all of ``1..n`` - a set - so its output is
  invariant. With two or more layers it is not: the hidden state at an earlier position k
  depends on which tokens precede k, which the shuffle changes.
* Any position encoding (learned, sinusoidal, RoPE, ALiBi) ties each token to its place, so
  nothing is invariant.

In float64 the invariant cases come out below 1e-10 relative (rounding only: the sums run in
another order); the others are many orders of magnitude larger.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from symbreak.model import GPT
from symbreak.seeding import keyed_seed

TOLERANCE = 1e-10


@dataclass
class LengthResult:
    n: int
    sequences: int
    permutations: int
    max_rel_change: float
    mean_rel_change: float


@dataclass
class PermutationResult:
    dtype: str
    tolerance: float
    lengths: list[LengthResult] = field(default_factory=list)

    @property
    def max_rel_change(self) -> float:
        return max(r.max_rel_change for r in self.lengths)

    @property
    def invariant(self) -> bool:
        return self.max_rel_change < self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "tolerance": self.tolerance,
            "max_rel_change": self.max_rel_change,
            "invariant": self.invariant,
            "lengths": [asdict(r) for r in self.lengths],
        }


def shuffled_prefixes(n: int, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` permutations of ``0..n-2`` (0-based positions of tokens 1..n-1), none the
    identity (n >= 3 leaves at least one other), then the fixed last index n-1 appended."""
    if n < 3:
        raise ValueError(f"a permutation test needs n >= 3 tokens (2 to shuffle), got {n}")
    gen = torch.Generator().manual_seed(keyed_seed(seed, "permutation", n))
    out = []
    while len(out) < count:
        p = torch.randperm(n - 1, generator=gen)
        if not torch.equal(p, torch.arange(n - 1)):
            out.append(torch.cat([p, torch.tensor([n - 1])]))
    return out


@torch.no_grad()
def permutation_test(
    model: GPT,
    tokens: torch.Tensor,
    lengths: list[int],
    permutations: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    tolerance: float = TOLERANCE,
) -> PermutationResult:
    """Largest relative change of the logits at position n when tokens 1..n-1 are shuffled.

    ``tokens``: (S, >= max(lengths)) held-out ids; each length n uses the first n of every row.
    The model is copied and cast to ``dtype`` (float64 for the exact table), in eval mode.
    """
    if tokens.shape[1] < max(lengths):
        raise ValueError(f"sequences of {tokens.shape[1]} tokens, shorter than n={max(lengths)}")
    m = copy.deepcopy(model).to(dtype).eval()
    result = PermutationResult(str(dtype).removeprefix("torch."), tolerance)
    for n in lengths:
        x = tokens[:, :n]
        ref = m.output(m.hidden(x)[:, -1])  # (S, V)
        ref_norm = ref.norm(dim=-1)
        rels = []
        for perm in shuffled_prefixes(n, permutations, seed):
            out = m.output(m.hidden(x[:, perm])[:, -1])
            rels.append((out - ref).norm(dim=-1) / ref_norm)
        rel = torch.cat(rels)
        result.lengths.append(
            LengthResult(n, x.shape[0], permutations, rel.max().item(), rel.mean().item())
        )
    return result
