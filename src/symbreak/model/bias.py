"""The symmetry-breaking bias: an unlearned vector added to q, k or v in every head.

In one head the scores are ``q.k = (W_Q x).(W_K x')``; rotating ``W_Q -> R W_Q`` and
``W_K -> R W_K`` (R orthogonal, d_head x d_head) changes nothing, so training carries
O(d_head) redundant directions. Adding a fixed, unlearned ``bQ`` (``q <- q + bQ``) breaks that:
``(R q + bQ).(R k) != (q + bQ).k`` unless ``R^T bQ = bQ``. The same holds for ``bV`` in the
V-O sector. A *learned* bias would rotate with W, so it keeps the symmetry (an ablation).

Distribution: ``b ~ N(mean, diag(std^2))`` with ``std`` either a constant or a linear ramp
``[lo, hi]`` across the d_head dimensions (the paper's bQ: mean 0.5, std 0.05 -> 0.15).

Modes (``sb.mode``):

* ``batch`` - a fresh draw for every batch. The trainer pins one draw per optimizer step with
  :meth:`BiasSampler.pin`, keyed by ``(seed, step, layer, kind)``: every rank and every
  micro-batch agree, and a resumed run draws the same biases without saving them. Used outside
  the trainer, each training-mode forward draws from a private counter instead.
* ``fixed`` - one draw at initialisation (key ``(seed, "fixed", layer, kind)``), kept, saved.
* ``learned`` - an ``nn.Parameter`` initialised at the mean (the ablation).

Evaluation (``sb.eval``): ``mean`` uses ``E[b] = mean`` (for ``fixed``/``learned`` the vector
itself), ``sample`` draws as in training, ``zero`` drops the bias. No draw ever touches the
global RNG: each uses its own ``torch.Generator`` seeded from a hash of its key.
"""

from __future__ import annotations

import torch
from torch import nn

from symbreak.seeding import keyed_seed


def std_profile(std: float | list[float], d_head: int) -> torch.Tensor:
    """Per-dimension standard deviation: a constant, or a linear ramp ``[lo, hi]``."""
    if isinstance(std, list | tuple):
        lo, hi = std
        return torch.linspace(float(lo), float(hi), d_head, dtype=torch.float64)
    return torch.full((d_head,), float(std), dtype=torch.float64)


class BiasSampler(nn.Module):
    """One bias (q, k or v) of one attention layer; ``forward()`` returns the vector to add.

    The returned tensor has shape ``(1, n, 1, d_head)`` with ``n`` = n_head when ``per_head``
    else 1, so it broadcasts over ``(B, n_head, T, d_head)``.
    """

    def __init__(
        self,
        kind: str,
        layer: int,
        n_head: int,
        d_head: int,
        mean: float,
        std: float | list[float],
        mode: str = "batch",
        per_head: bool = False,
        eval_mode: str = "mean",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.kind, self.layer, self.mode, self.eval_mode, self.seed = (
            kind,
            layer,
            mode,
            eval_mode,
            seed,
        )
        n = n_head if per_head else 1
        shape = (1, n, 1, d_head)
        # Buffers derived from the config are non-persistent: the config rebuilds them, and
        # checkpoints hold only what training changed.
        self.register_buffer("mean", torch.full(shape, float(mean)), persistent=False)
        self.register_buffer(
            "std",
            std_profile(std, d_head).to(torch.float32).expand(shape).clone(),
            persistent=False,
        )
        self._pinned: torch.Tensor | None = None
        self._pinned_step: int | None = None
        self._auto_draws = 0  # draws made outside the trainer (no pinned step)
        if mode == "learned":
            self.weight = nn.Parameter(self.mean.clone())
        elif mode == "fixed":
            self.register_buffer("fixed_draw", self.draw("fixed"))
        elif mode != "batch":
            raise ValueError(f"unknown sb.mode {mode!r}")

    def draw(self, *key: object) -> torch.Tensor:
        """``mean + std * z`` with ``z ~ N(0, I)`` from a generator seeded by ``key``."""
        gen = torch.Generator(device="cpu").manual_seed(
            keyed_seed(self.seed, self.kind, self.layer, *key)
        )
        z = torch.randn(self.mean.shape, generator=gen, dtype=torch.float32)
        return self.mean + self.std * z.to(self.mean.device)

    def pin(self, step: int) -> None:
        """Use the draw of optimizer step ``step`` for every training forward until re-pinned."""
        if self.mode == "batch" and step != self._pinned_step:
            self._pinned = self.draw("step", step)
            self._pinned_step = step

    def unpin(self) -> None:
        self._pinned, self._pinned_step = None, None

    def forward(self) -> torch.Tensor | None:
        if self.mode == "learned":
            return None if (not self.training and self.eval_mode == "zero") else self.weight
        if self.mode == "fixed":
            return None if (not self.training and self.eval_mode == "zero") else self.fixed_draw
        # batch mode
        if self.training:
            if self._pinned is not None:
                return self._pinned
            self._auto_draws += 1
            return self.draw("auto", self._auto_draws - 1)
        if self.eval_mode == "mean":
            return self.mean
        if self.eval_mode == "sample":
            self._auto_draws += 1
            return self.draw("auto", self._auto_draws - 1)
        return None

    def expected(self) -> torch.Tensor:
        """``<b>``: the vector evaluation with ``sb.eval=mean`` uses (for interpretation)."""
        if self.mode == "learned":
            return self.weight.detach()
        if self.mode == "fixed":
            return self.fixed_draw
        return self.mean

    def extra_repr(self) -> str:
        return f"kind={self.kind}, layer={self.layer}, mode={self.mode}, eval={self.eval_mode}"
