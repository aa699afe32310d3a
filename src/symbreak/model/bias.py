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
itself), ``sample`` draws as in training, ``zero`` drops the bias, ``mixture`` uses the component
the model selects (see below; a forward outside that loop gets the mean). No draw ever touches
the global RNG: each uses its own ``torch.Generator`` seeded from a hash of its key.

Components (``sb.q_components = K``, batch mode only). The bias is a uniform mixture of K
Gaussians, ``b ~ (1/K) sum_k N(mu_k, diag(std^2))``: a draw picks ``k`` and adds the noise of
its key to ``mu_k``. :func:`component_means` builds the ``mu_k`` from ``(seed, kind, layer)``
alone (non-persistent: every command rebuilds the same ones): ``mu_0`` is today's single mean
``m 1``, the others orthonormal-completion directions scaled to its norm ``|m| sqrt(d)``, so the
components are mutually orthogonal and equally strong. Their average, what ``eval=mean`` adds,
then has norm exactly ``|m| sqrt(d) / sqrt(K)``. The choice of k is keyed by the step (or by the
step and the sequence's index in the global batch, ``sb.component_unit=sequence``), never by
kind or layer: every layer, bQ and bV use the same component in one forward, which is what
``eval=mixture`` reproduces with K forwards. With K = 1 nothing of this runs: the draws are
bit-identical to a single-mean sampler.
"""

from __future__ import annotations

import torch
from torch import nn

from symbreak.seeding import keyed_seed


def component_means(
    mean: float, n: int, d_head: int, k: int, seed: int, kind: str, layer: int
) -> torch.Tensor:
    """``(k, n, d_head)`` float64: ``mu_0 = mean * 1`` and ``k - 1`` further directions that
    complete it to an orthogonal set (Gram-Schmidt of Gaussian vectors keyed by
    ``(seed, kind, layer, "components")``), each of norm ``|mean| sqrt(d_head)``; ``n`` sets,
    one per head with ``per_head`` (one shared when n = 1)."""
    ones = torch.full((n, d_head), float(mean), dtype=torch.float64)
    if k == 1:
        return ones[None]
    gen = torch.Generator(device="cpu").manual_seed(keyed_seed(seed, kind, layer, "components"))
    z = torch.randn((n, d_head, k - 1), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.cat((ones[..., None], z), dim=-1))  # (n, d, k)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # positive diagonal
    rest = q[..., 1:].permute(2, 0, 1) * abs(float(mean)) * d_head**0.5  # (k - 1, n, d)
    return torch.cat((ones[None], rest))


def choose_component(seed: int, k: int, *key: object) -> int:
    """The component of one draw: a hash of ``(seed, "component", *key)`` mod k (uniform to
    within 2^-60), without kind or layer, so every sampler of a forward agrees."""
    return keyed_seed(seed, "component", *key) % k


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
        components: int = 1,
        unit: str = "batch",
    ) -> None:
        super().__init__()
        if components > 1 and mode != "batch":
            raise ValueError(f"{components} components need sb.mode=batch, not {mode!r}")
        self.n_components, self.unit = components, unit
        # the component evaluation uses (eval=mixture), set by the model's mixture loop
        self.eval_component: int | None = None
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
        if components == 1:
            self.register_buffer("mean", torch.full(shape, float(mean)), persistent=False)
        else:
            mus = component_means(mean, n, d_head, components, seed, kind, layer)
            self.register_buffer(
                "components", mus.to(torch.float32).view(components, n, 1, d_head), persistent=False
            )
            # <b> of the mixture: the average of the component means, norm |m| sqrt(d / K)
            self.register_buffer(
                "mean", mus.mean(0).to(torch.float32).view(shape), persistent=False
            )
        self.register_buffer(
            "std",
            std_profile(std, d_head).to(torch.float32).expand(shape).clone(),
            persistent=False,
        )
        self._pinned: torch.Tensor | None = None
        self._pinned_step: int | None = None
        # component_unit=sequence: the step's noise, and the global batch rows of the forward
        self._pinned_noise: torch.Tensor | None = None
        self._rows: list[int] | None = None
        self._auto_draws = 0  # draws made outside the trainer (no pinned step)
        if mode == "learned":
            self.weight = nn.Parameter(self.mean.clone())
        elif mode == "fixed":
            self.register_buffer("fixed_draw", self.draw("fixed"))
        elif mode != "batch":
            raise ValueError(f"unknown sb.mode {mode!r}")

    def noise(self, *key: object) -> torch.Tensor:
        """``std * z`` with ``z ~ N(0, I)`` from a generator seeded by ``key``."""
        gen = torch.Generator(device="cpu").manual_seed(
            keyed_seed(self.seed, self.kind, self.layer, *key)
        )
        z = torch.randn(self.mean.shape, generator=gen, dtype=torch.float32)
        return self.std * z.to(self.mean.device)

    def draw(self, *key: object, component: int | torch.Tensor | None = None) -> torch.Tensor:
        """``mu + std * z``: ``mu`` the mean (``component`` None), or component ``component``'s
        (an int, or one per sequence: a (B,) tensor, giving a (B, n, 1, d) draw)."""
        return self.component_mean(component) + self.noise(*key)

    def component_mean(self, component: int | torch.Tensor | None) -> torch.Tensor:
        if component is None:
            return self.mean
        if isinstance(component, int):
            return self.components[component : component + 1]
        return self.components[component.to(self.components.device)]

    def all_means(self) -> torch.Tensor:
        """``(K, n, 1, d)``: every component's mean (K = 1: :meth:`expected`)."""
        return self.components if self.n_components > 1 else self.expected()

    def _choice(
        self, batch: int, rows: list[int] | None, *key: object
    ) -> int | torch.Tensor | None:
        """The component(s) of a draw keyed by ``key``: None with one component, an int per
        batch, or a (B,) tensor keyed by each sequence's global row (default ``0..B-1``)."""
        k = self.n_components
        if k == 1:
            return None
        if self.unit == "batch":
            return choose_component(self.seed, k, *key)
        rows = list(range(batch)) if rows is None else rows
        return torch.tensor([choose_component(self.seed, k, *key, "row", j) for j in rows])

    def pin(self, step: int, rows: list[int] | None = None) -> None:
        """Use the draw of optimizer step ``step`` for every training forward until re-pinned.
        With ``component_unit=sequence``, ``rows`` are the global batch indices of the
        sequences of the next forwards (default: ``0..B-1``)."""
        if self.mode != "batch":
            return
        if self.n_components > 1 and self.unit == "sequence":
            if step != self._pinned_step:
                self._pinned_noise, self._pinned_step = self.noise("step", step), step
            self._rows = rows
        elif step != self._pinned_step:
            self._pinned = self.draw("step", step, component=self._choice(1, None, "step", step))
            self._pinned_step = step

    def unpin(self) -> None:
        self._pinned, self._pinned_step = None, None
        self._pinned_noise, self._rows = None, None

    def _auto_draw(self, batch: int) -> torch.Tensor:
        n = self._auto_draws
        self._auto_draws += 1
        return self.draw("auto", n, component=self._choice(batch, None, "auto", n))

    def forward(self, batch: int = 1) -> torch.Tensor | None:
        """The bias for a forward over ``batch`` sequences: ``(1, n, 1, d)``, or ``(batch, n,
        1, d)`` when each sequence draws its own component."""
        if self.mode == "learned":
            return None if (not self.training and self.eval_mode == "zero") else self.weight
        if self.mode == "fixed":
            return None if (not self.training and self.eval_mode == "zero") else self.fixed_draw
        # batch mode
        if self.training:
            if self._pinned is not None:
                return self._pinned
            if self._pinned_noise is not None:
                step = self._pinned_step
                choice = self._choice(batch, self._rows, "step", step)
                return self.component_mean(choice) + self._pinned_noise
            return self._auto_draw(batch)
        if self.eval_mode == "mean":
            return self.mean
        if self.eval_mode == "sample":
            return self._auto_draw(batch)
        if self.eval_mode == "mixture":
            k = self.eval_component
            return self.mean if k is None or self.n_components == 1 else self.component_mean(k)
        return None

    def expected(self) -> torch.Tensor:
        """``<b>``: the vector evaluation with ``sb.eval=mean`` uses (for interpretation)."""
        if self.mode == "learned":
            return self.weight.detach()
        if self.mode == "fixed":
            return self.fixed_draw
        return self.mean

    def extra_repr(self) -> str:
        extra = f", components={self.n_components} per {self.unit}" if self.n_components > 1 else ""
        return (
            f"kind={self.kind}, layer={self.layer}, mode={self.mode}, eval={self.eval_mode}{extra}"
        )
