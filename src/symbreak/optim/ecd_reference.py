"""A plain, slow, float64 reference of ECD (``q1_scaled``), written straight from the equations.

Used by the tests to check :class:`symbreak.optim.ecd.ECD`. It works on ONE flat vector
``theta`` in R^D (all parameters concatenated in parameter order). ``lr`` and ``weight_decay``
may be per-coordinate vectors, which is how several param groups are expressed.

Noise: ``z = torch.randn(D, generator=generator, dtype=float64)``, one flat draw per step, split
in parameter order; ECD draws the same when all parameters share one device and dtype.
"""

import math

import torch
from torch import Tensor


class ECDReference:
    """ECD on a flat float64 vector. ``sizes``: the numel of each tensor (for ``per_tensor``)."""

    def __init__(
        self,
        sizes: list[int],
        lr: float | Tensor = 1.0,
        eta: float = 100.0,
        F0: float | str = 2.0,
        nu: float = 0.0,
        weight_decay: float | Tensor = 0.0,
        cons_en: bool = True,
        eps1: float = 1e-10,
        eps2: float = 1e-40,
        projection: str = "global",
        seed: int = 0,
        F0_margin: float = 1.0,
    ) -> None:
        self.sizes, self.lr, self.eta, self.F0, self.nu = sizes, lr, eta, F0, nu
        self.weight_decay, self.cons_en, self.eps1, self.eps2 = weight_decay, cons_en, eps1, eps2
        self.projection, self.F0_margin = projection, F0_margin
        self.generator = torch.Generator().manual_seed(seed)
        self.p: Tensor | None = None  # momentum
        self.P2 = 1.0
        self.V_min = math.inf
        self.frozen_steps = 0

    def step(self, theta: Tensor, g: Tensor, L: float) -> Tensor:
        """One step from position ``theta`` with gradient ``g`` and loss ``L``: the new theta."""
        D = theta.numel()
        lam = self.weight_decay
        dt = self.lr / math.sqrt(self.eta)
        nu_p = self.nu / math.sqrt(D)
        V = L + 0.5 * float((lam * theta * theta).sum())
        G = g + lam * theta
        if self.F0 == "auto":
            self.V_min = min(self.V_min, V)
            F0 = self.V_min - self.F0_margin
        else:
            F0 = float(self.F0)
        gap = V - F0
        if gap <= self.eps2:
            self.frozen_steps += 1
            return theta
        if self.p is None:  # first step: p = -g/|g|, P2 = 1, then steps 1-4 below
            self.p = -g / g.norm()
            self.P2 = 1.0
        p = self.p
        # 1.
        c = 1.0
        if self.cons_en and not abs(1.0 - self.P2) < self.eps1 and self.P2 > 0:
            c = 1.0 / math.sqrt(self.P2)
        p = c * p
        # 2.
        kappa = 0.5 * dt * self.eta * D / ((D - 1) * gap)
        if self.projection == "global":
            pG = (p * G).sum()
        else:  # <p, G> of each tensor, repeated over that tensor's coordinates
            pG = torch.cat(
                [
                    (ps * Gs).sum().expand(n)
                    for ps, Gs, n in zip(
                        p.split(self.sizes), G.split(self.sizes), self.sizes, strict=True
                    )
                ]
            )
        p = p - kappa * (G - p * pG)
        # 3.
        pi = p.norm()
        theta = theta + dt * p
        # 4.
        if self.nu > 0:
            z = torch.randn(D, generator=self.generator, dtype=torch.float64)
            p = p / pi + nu_p * z
            p = pi * p / p.norm()
        self.p = p
        self.P2 = float(pi**2)
        return theta
