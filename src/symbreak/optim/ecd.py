"""Energy Conserving Descent (ECD), the ``q1_scaled`` variant, as a fast ``torch.optim`` optimizer.

ECD moves the parameters like a particle with unit speed in the potential ``V`` and slows the
"time" down where ``V`` is high, so that the Liouville measure concentrates near low loss
(De Luca & Silverstein, "Born-Infeld (BI) for AI: Energy-Conserving Descent (ECD) for
Optimization"; this is the variant used by the symmetry-breaking paper's ``ECD_q1_scaled``).

Symbols (all sums and norms run over ALL parameters that take part in the step, across all
param groups, as one vector):

* ``theta``: the parameters, ``g``: their gradient, ``L``: the loss, ``lambda``: weight decay,
* ``D``: number of scalar parameters that have a gradient on this step,
* ``dt = lr / sqrt(eta)``, ``nu' = nu / sqrt(D)``,
* ``V = L + (lambda/2) |theta|^2`` and ``G = g + lambda theta`` (force of ``V``),
* ``p``: the momentum (a velocity), one tensor per parameter, ``P2``: a global scalar.

First step: ``p = -g / |g|`` and ``P2 = 1``; then, in that same call, the update below.
Each step, only if ``V - F0 > eps2`` (otherwise the step is *frozen*: nothing moves):

1. ``c = 1/sqrt(P2)`` (``c = 1`` if ``|1 - P2| < eps1``, or if ``cons_en`` is off); ``p <- c p``.
2. ``kappa = 0.5 dt eta D / ((D - 1)(V - F0))``; ``p <- p - kappa (G - p <p, G>)``.
3. ``pi = |p|``; ``theta <- theta + dt p``.
4. If ``nu > 0``: ``p <- p/pi + nu' z`` with ``z ~ N(0, I)``, then ``p <- pi p/|p|``.
   ``P2 <- pi^2``. (With ``nu = 0``, step 4 is ``p <- p`` and no noise is drawn.)

After step 4 ``|p| = pi``, so the next step's ``c`` rescales the momentum to norm 1.

Sharded parameters (FSDP2 ``DTensor``s, ``train.parallel=fsdp``): the update runs on each rank's
local shards, and every global quantity above (``|g|^2``, ``<p, G>``, ``|p|^2``,
``|theta|^2``, the norm after the noise) is a sum of the ranks' partial sums (one all-reduce
each); ``D`` counts the whole parameters. The noise ``z`` is drawn whole (D numbers, the same
stream on every rank, as one process draws it) and each rank takes its shards' entries, so a
sharded run follows the single-process one up to the order of floating-point sums.
"""

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from symbreak.errors import CheckpointError, TrainingError

__all__ = ["ECD"]

#: Hyperparameters the maths needs to be the same for every param group.
SHARED_KEYS = ("eta", "F0", "F0_margin", "nu", "cons_en", "eps1", "eps2", "projection")
PROJECTIONS = ("global", "per_tensor")


@dataclass
class _Chunk:
    """The tensors of one param group that live on one (device, dtype) and have a gradient."""

    lr: float
    weight_decay: float
    device: torch.device
    dtype: torch.dtype
    params: list[Tensor] = field(default_factory=list)  # local shards when sharded
    grads: list[Tensor] = field(default_factory=list)
    momenta: list[Tensor] = field(default_factory=list)
    owners: list[Tensor] = field(default_factory=list)  # the parameters themselves (DTensors)


def _local(t: Tensor) -> Tensor:
    """A DTensor's local shard (sharing its storage), or the tensor itself."""
    return t.to_local() if hasattr(t, "device_mesh") else t


def _sharding_group(chunks: list["_Chunk"]) -> Any:
    """The process group of sharded (DTensor) parameters, or None when nothing is sharded."""
    for ch in chunks:
        for p in ch.owners:
            if hasattr(p, "device_mesh"):
                return p.device_mesh.get_group()
    return None


def _dots(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    """``[<x_i, y_i>]_i`` as a 1-d tensor: one ``torch.dot`` per pair (no host sync)."""
    return torch.stack(
        [torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys, strict=True)]
    )


def _like(p: Tensor, local: Tensor) -> Tensor:
    """State for parameter ``p`` from its local values: a DTensor sharded as ``p`` (sharing
    ``local``'s storage) when ``p`` is one, else ``local`` itself."""
    if not hasattr(p, "device_mesh"):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )


def _shard_of(full: Tensor, p: Tensor) -> Tensor:
    """This rank's part of ``full`` (shaped like the whole parameter ``p``), as ``p`` is cut."""
    if not hasattr(p, "device_mesh"):
        return full
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    index = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
    return full[index]


class ECD(Optimizer):
    r"""Energy Conserving Descent, ``q1_scaled`` variant (see the module docstring for the maths).

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        lr: step size; the integration time step is ``dt = lr / sqrt(eta)``.
        eta: concentration of the measure, ``p(theta) ~ (V - F0)^(-eta D / 2)``.
        F0: a value below the lowest reachable ``V``; or ``"auto"``, which uses
            ``F0 = min(V seen so far, this step included) - F0_margin``.
        F0_margin: the margin of ``F0="auto"``. The default 1.0 follows the paper's advice
            "``F0 = F_min - 1``"; it keeps ``V - F0 >= F0_margin``, so an auto step never freezes.
        nu: amplitude of the random rotation of the momentum (chaos); 0 draws no noise.
        weight_decay: ``lambda``, an L2 term in the potential ``V`` (not decoupled).
        cons_en: rescale the momentum to norm 1 at each step (energy conservation).
        eps1, eps2: the tolerances of step 1 and of the frozen check.
        projection: ``"global"`` (default): ``<p, G>`` over all parameters, as in the equations;
            ``"per_tensor"``: ``<p, G>`` per parameter tensor, used for that tensor only (the
            paper's reference code; a compatibility switch).
        seed: seed of the private noise generators; ``None`` uses ``torch.initial_seed()``.

    Calling convention: ``step(closure)`` (the closure runs under ``torch.enable_grad()``, does
    ``zero_grad`` + forward + backward itself and returns the loss), or ``step(loss=loss)`` when
    the gradients are already in ``.grad`` (exactly one of the two).

    Decisions beyond the equations:

    * First step: ``p = -g/|g|``, ``P2 = 1``, then steps 1-4 in the same call, as the original
      code does. The initialisation happens on the first step that is not frozen (the original
      retries it while frozen), so ``p`` starts along the gradient where the motion starts.
    * Param groups: ``eta``, ``F0``, ``F0_margin``, ``nu``, ``cons_en``, ``eps1``, ``eps2`` and
      ``projection`` must agree across groups. ``lr`` and ``weight_decay`` may differ: group
      ``k`` moves with ``dt_k = lr_k / sqrt(eta)``, uses ``kappa_k`` computed with ``dt_k``, and
      its ``lambda_k`` enters ``V`` as ``(lambda_k / 2)|theta_k|^2`` and ``G`` as
      ``g + lambda_k theta_k``. With one group this is exactly the equations. The current
      ``lr`` of each group is read at every step, so LR schedulers work.
    * Parameters whose ``.grad`` is ``None`` sit the step out: they are not moved, their
      momentum is left as it is, and they count neither in ``D`` nor in any norm or dot
      product. A parameter that first gets a gradient after the first step starts with zero
      momentum.
    * Frozen steps (``V - F0 <= eps2`` with a numeric ``F0``) change nothing, are counted in
      :attr:`frozen_steps`, and warn once per optimizer. A non-finite ``V`` raises
      :class:`~symbreak.errors.TrainingError` (it would poison the momentum).
    * Noise: ``z`` is drawn as ONE flat vector ``torch.randn(n)`` per (device, dtype) of the
      parameters taking part, in order of first appearance; its entries are handed out to the
      tensors in param-group order, then parameter order, each tensor taking the next
      ``numel()`` entries (reshaped). With one device and dtype this is simply
      ``z = randn(D)`` split in parameter order. Each device has its own generator, seeded with
      ``seed``; the noise has the parameters' dtype.
    * Speed: the tensor work is ``torch._foreach_*`` calls over the lists of tensors, except the
      dot products ``<p, G>``, which are one ``torch.dot`` per tensor (there is no foreach
      reduction for a signed sum; on CPU this is 5x faster than ``_foreach_mm`` and 9x faster
      than ``_foreach_mul`` + sums). Step 1 is folded into step 2 (``p <- a p - kappa G`` with
      ``a = c (1 + kappa c <p_old, G>)``) and ``G`` is never materialised (``<p, G> = <p, g> +
      lambda <p, theta>``), so the default step allocates nothing N-sized. Global norms and
      dots stay 0-d tensors on the device. There is exactly ONE host synchronisation per step:
      reading ``V`` (with ``P2``, or ``|g|^2`` on the first step) by one ``.tolist()``; it
      decides the frozen check, ``F0="auto"``, ``c`` and ``kappa`` on the host. With
      ``nu > 0`` the noise is drawn into a scratch buffer of the parameters' size kept between
      steps on CPU (not part of the state; CUDA reuses memory through its allocator anyway).

    State: ``state[p]["momentum"]`` (one tensor per parameter); the global scalars (step count,
    ``P2``, ``D``, lowest ``V``, frozen count, the noise generators' states) travel in an extra
    ``"ecd"`` entry of :meth:`state_dict`, so that a resumed run continues bit for bit.
    """

    needs_loss = True  # step() must be given the loss (the trainer passes loss=...)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        eta: float = 100.0,
        F0: float | str = 2.0,
        nu: float = 0.0,
        weight_decay: float = 0.0,
        cons_en: bool = True,
        eps1: float = 1e-10,
        eps2: float = 1e-40,
        projection: str = "global",
        seed: int | None = None,
        F0_margin: float = 1.0,
    ) -> None:
        defaults = dict(
            lr=lr,
            eta=eta,
            F0=F0,
            F0_margin=F0_margin,
            nu=nu,
            weight_decay=weight_decay,
            cons_en=cons_en,
            eps1=eps1,
            eps2=eps2,
            projection=projection,
        )
        self._check_group(defaults)
        self._seed = int(torch.initial_seed() if seed is None else seed)
        self._generators: dict[str, torch.Generator] = {}
        self._scratch: dict[torch.dtype, Tensor] = {}  # CPU noise buffers, see _noise
        self._ecd: dict[str, Any] = {
            "step": 0,  # calls that reached the update (frozen ones included)
            "initialised": False,
            "P2": None,  # 0-d tensor once initialised
            "D": 0,
            "V_min": None,  # lowest V seen (for F0="auto")
            "F0": None,  # the F0 used by the last step
            "frozen_steps": 0,
        }
        self._warned_frozen = False
        self._group: Any = None  # process group of sharded parameters, set per step
        super().__init__(params, defaults)

    # ----------------------------------------------------------------------------- validation

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"ECD: {what}")

        need(float(group["lr"]) >= 0.0, f"lr must be >= 0, got {group['lr']}")
        need(float(group["eta"]) > 0.0, f"eta must be > 0, got {group['eta']}")
        need(float(group["nu"]) >= 0.0, f"nu must be >= 0, got {group['nu']}")
        need(
            float(group["weight_decay"]) >= 0.0,
            f"weight_decay must be >= 0, got {group['weight_decay']}",
        )
        F0 = group["F0"]
        need(
            F0 == "auto" or (isinstance(F0, int | float) and not isinstance(F0, bool)),
            f"F0 must be a number or 'auto', got {F0!r}",
        )
        need(float(group["F0_margin"]) > 0.0, f"F0_margin must be > 0, got {group['F0_margin']}")
        need(float(group["eps1"]) >= 0.0, f"eps1 must be >= 0, got {group['eps1']}")
        need(float(group["eps2"]) >= 0.0, f"eps2 must be >= 0, got {group['eps2']}")
        need(
            isinstance(group["cons_en"], bool), f"cons_en must be a bool, got {group['cons_en']!r}"
        )
        need(
            group["projection"] in PROJECTIONS,
            f"projection must be one of {PROJECTIONS}, got {group['projection']!r}",
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._check_group(group)
        for p in group["params"]:
            if not p.is_floating_point():
                raise ValueError(f"ECD: parameters must be real floating point, got {p.dtype}")
        first = self.param_groups[0]
        for key in SHARED_KEYS:
            if group[key] != first[key]:
                raise ValueError(
                    f"ECD: {key} must be the same in all param groups "
                    f"({first[key]!r} != {group[key]!r}); only lr and weight_decay may differ"
                )

    def _shared(self) -> dict[str, Any]:
        """The group-independent hyperparameters, checked again (groups are mutable)."""
        first = self.param_groups[0]
        for group in self.param_groups:
            self._check_group(group)
            for key in SHARED_KEYS:
                if group[key] != first[key]:
                    raise ValueError(
                        f"ECD: {key} must be the same in all param groups "
                        f"({first[key]!r} != {group[key]!r})"
                    )
        return {key: first[key] for key in SHARED_KEYS}

    # ------------------------------------------------------------------------------ public API

    @property
    def frozen_steps(self) -> int:
        """Number of steps skipped because ``V - F0 <= eps2``."""
        return int(self._ecd["frozen_steps"])

    @property
    def effective_F0(self) -> float | None:
        """The ``F0`` used by the last step (useful with ``F0="auto"``); None before any."""
        return self._ecd["F0"]

    def step(  # type: ignore[override]
        self,
        closure: Callable[[], Tensor | float] | None = None,
        *,
        loss: Tensor | float | None = None,
    ) -> Tensor | float:
        """One ECD step; give exactly one of ``closure`` or ``loss``. Returns the loss."""
        if (closure is None) == (loss is None):
            raise ValueError(
                "ECD.step needs exactly one of closure= (a callable that does zero_grad, "
                "forward and backward and returns the loss) or loss= (the loss whose "
                "gradients are already in .grad)"
            )
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if loss is None:
                raise ValueError("ECD.step: the closure returned None; it must return the loss")
        assert loss is not None
        warning = self._update(loss)
        if warning is not None:  # stacklevel 3: past torch's step wrapper, at the caller
            warnings.warn(warning, RuntimeWarning, stacklevel=3)
        return loss

    # ------------------------------------------------------------------------- state handling

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._seed)
            self._generators[key] = gen
        return gen

    def _noise(self, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``z ~ N(0, I_n)`` from the device's generator.

        On CPU it is drawn into a scratch buffer kept between steps: a fresh N-sized tensor
        costs page faults (about as much as drawing it, measured); CUDA's caching allocator
        already reuses memory, so there it is a plain new tensor. Same numbers either way.
        """
        gen = self._generator(device)
        if device.type != "cpu":
            return torch.randn(n, generator=gen, device=device, dtype=dtype)
        buf = self._scratch.get(dtype)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self._scratch[dtype] = buf
        return torch.randn(n, generator=gen, dtype=dtype, out=buf[:n])

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        st = self._ecd
        P2 = st["P2"]
        sd["ecd"] = {
            "step": st["step"],
            "initialised": st["initialised"],
            "P2": None if P2 is None else P2.detach().clone(),
            "D": st["D"],
            "V_min": st["V_min"],
            "F0": st["F0"],
            "frozen_steps": st["frozen_steps"],
            "seed": self._seed,
            "generator_states": {k: g.get_state() for k, g in self._generators.items()},
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        ecd = sd.pop("ecd", None)
        if not isinstance(ecd, dict):
            raise CheckpointError(
                "the optimizer state has no 'ecd' entry: it was not saved by the ECD optimizer"
            )
        super().load_state_dict(sd)
        self._seed = int(ecd["seed"])
        self._ecd = {
            "step": int(ecd["step"]),
            "initialised": bool(ecd["initialised"]),
            "P2": None if ecd["P2"] is None else ecd["P2"].detach().clone(),
            "D": int(ecd["D"]),
            "V_min": ecd["V_min"],
            "F0": ecd["F0"],
            "frozen_steps": int(ecd["frozen_steps"]),
        }
        self._generators = {}
        for key, gen_state in ecd["generator_states"].items():
            self._generator(torch.device(key)).set_state(gen_state.cpu())

    # ---------------------------------------------------------------------------------- maths

    def _gather(self) -> list[_Chunk]:
        """Parameters with a gradient, split by (param group, device, dtype)."""
        chunks: list[_Chunk] = []
        for group in self.param_groups:
            by_key: dict[tuple[torch.device, torch.dtype], _Chunk] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("ECD does not support sparse gradients")
                key = (p.device, p.dtype)
                chunk = by_key.get(key)
                if chunk is None:
                    chunk = _Chunk(float(group["lr"]), float(group["weight_decay"]), *key)
                    by_key[key] = chunk
                    chunks.append(chunk)
                chunk.params.append(_local(p))
                chunk.grads.append(_local(p.grad))
                chunk.owners.append(p)
        return chunks

    def _allreduce(self, t: Tensor) -> Tensor:
        """Sum of the ranks' partial sums when the parameters are sharded; else ``t``."""
        if self._group is not None:
            import torch.distributed as dist

            dist.all_reduce(t, group=self._group)
        return t

    @staticmethod
    def _sqnorm(tensors: list[Tensor], device: torch.device, dtype: torch.dtype) -> Tensor:
        """``|x|^2`` of a list of tensors taken as one vector, a 0-d tensor (no sync)."""
        norms = torch.stack(torch._foreach_norm(tensors)).to(device=device, dtype=dtype)
        return norms.square().sum()

    @torch.no_grad()
    def _update(self, loss: Tensor | float) -> str | None:
        """The step proper; returns the frozen-step warning to show, if any."""
        hp = self._shared()
        chunks = self._gather()
        if not chunks:
            return None  # no parameter has a gradient: nothing to do (as torch optimizers do)
        self._group = _sharding_group(chunks)
        st = self._ecd
        st["step"] += 1

        # Global scalars live on the first parameter's device, in at least float32.
        dev = chunks[0].device
        sdtype = reduce(torch.promote_types, (ch.dtype for ch in chunks), torch.float32)

        def here(t: Tensor) -> Tensor:
            return t.to(device=dev, dtype=sdtype)

        # V = L + sum_k (lambda_k / 2) |theta_k|^2
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"ECD: the loss must be a scalar, got shape {tuple(loss.shape)}")
            V = here(loss.detach().reshape(()))
        else:
            V = torch.tensor(float(loss), device=dev, dtype=sdtype)
        if any(ch.weight_decay != 0.0 for ch in chunks):
            wd = V.new_zeros(())
            for ch in chunks:
                if ch.weight_decay != 0.0:
                    wd = wd + 0.5 * ch.weight_decay * self._sqnorm(ch.params, dev, sdtype)
            V = V + self._allreduce(wd)
        init = not st["initialised"]
        if init:  # |g|^2 for p = -g/|g|
            second = sum((self._sqnorm(ch.grads, dev, sdtype) for ch in chunks), V.new_zeros(()))
            second = self._allreduce(second)
        else:
            second = here(st["P2"])
        # The one host synchronisation of the step.
        V_h, second_h = torch.stack((V, second)).tolist()

        if not math.isfinite(V_h):
            raise TrainingError(f"ECD: the loss is not finite (V = {V_h}); cannot take a step")
        if hp["F0"] == "auto":
            st["V_min"] = V_h if st["V_min"] is None else min(st["V_min"], V_h)
            F0 = st["V_min"] - float(hp["F0_margin"])
        else:
            F0 = float(hp["F0"])
        st["F0"] = F0
        gap = V_h - F0
        if gap <= float(hp["eps2"]):  # frozen: nothing moves (V is finite here)
            st["frozen_steps"] += 1
            if not self._warned_frozen:
                self._warned_frozen = True
                return (
                    f"ECD step frozen: V - F0 = {V_h:.6g} - {F0:.6g} <= eps2, so no parameter "
                    f"moves; lower optim.F0 below the loss or use F0='auto' (counted in "
                    f"optimizer.frozen_steps; this warning is shown once)"
                )
            return None

        D = sum(p.numel() for ch in chunks for p in ch.owners)  # whole parameters, not shards
        if D < 2:
            raise TrainingError(f"ECD needs at least 2 scalar parameters with gradients, got {D}")
        st["D"] = D

        # First step: p = -g/|g|, P2 = 1.
        if init:
            if not (math.isfinite(second_h) and second_h > 0.0):
                raise TrainingError(
                    f"ECD: the first gradient has |g|^2 = {second_h}; ECD starts moving along "
                    f"-g/|g| and needs a finite, non-zero gradient"
                )
            gnorm = math.sqrt(second_h)
            for ch in chunks:
                ch.momenta = torch._foreach_div(ch.grads, -gnorm)
                for p, m in zip(ch.owners, ch.momenta, strict=True):
                    self.state[p]["momentum"] = _like(p, m)
            st["initialised"] = True
            P2_h = 1.0
        else:
            P2_h = second_h
            for ch in chunks:
                for p, local in zip(ch.owners, ch.params, strict=True):
                    pst = self.state[p]
                    if "momentum" not in pst:  # first gradient after the first step
                        zeros = torch.zeros_like(local, memory_format=torch.preserve_format)
                        pst["momentum"] = _like(p, zeros)
                    ch.momenta.append(_local(pst["momentum"]))

        # 1. c = 1/sqrt(P2) (1 if |1 - P2| < eps1 or cons_en is off); folded into step 2.
        c = 1.0
        if hp["cons_en"] and abs(1.0 - P2_h) >= float(hp["eps1"]) and P2_h > 0.0:
            c = 1.0 / math.sqrt(P2_h)

        # 2. With d = <p_old, G>: c p - kappa (G - c p <c p, G>) = c (1 + kappa c d) p - kappa G.
        # G = g + lambda theta is never materialised (no N-sized temporary):
        # <p, G> = <p, g> + lambda <p, theta> and p -= kappa g; p -= kappa lambda theta.
        eta = float(hp["eta"])
        dots = []  # per-tensor <p_old, G>
        for ch in chunks:
            d = _dots(ch.momenta, ch.grads)
            if ch.weight_decay != 0.0:
                d = d + ch.weight_decay * _dots(ch.momenta, ch.params)
            dots.append(self._allreduce(d))
        d_all = sum((here(d.sum()) for d in dots), V.new_zeros(()))  # used if "global"
        dts = []
        for ch, d in zip(chunks, dots, strict=True):
            dt = ch.lr / math.sqrt(eta)
            dts.append(dt)
            kappa = 0.5 * dt * eta * D / ((D - 1) * gap)
            if hp["projection"] == "global":
                a = (c * (1.0 + (kappa * c) * d_all)).to(ch.device)
                torch._foreach_mul_(ch.momenta, a)
            else:
                a = c * (1.0 + (kappa * c) * d)
                torch._foreach_mul_(ch.momenta, list(a.unbind(0)))
            torch._foreach_add_(ch.momenta, ch.grads, alpha=-kappa)
            if ch.weight_decay != 0.0:
                torch._foreach_add_(ch.momenta, ch.params, alpha=-kappa * ch.weight_decay)

        # 3. pi = |p|; theta <- theta + dt p.
        pi2 = sum((self._sqnorm(ch.momenta, dev, sdtype) for ch in chunks), V.new_zeros(()))
        pi2 = self._allreduce(pi2)
        for ch, dt in zip(chunks, dts, strict=True):
            torch._foreach_add_(ch.params, ch.momenta, alpha=dt)

        # 4. p <- p/pi + nu' z; p <- pi p/|p|  (skipped entirely when nu == 0).
        nu = float(hp["nu"])
        if nu > 0.0:
            pi = pi2.sqrt()
            nu_p = nu / math.sqrt(D)
            buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            owners: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for ch in chunks:
                buckets.setdefault((ch.device, ch.dtype), []).extend(ch.momenta)
                owners.setdefault((ch.device, ch.dtype), []).extend(ch.owners)
            for (bdev, bdtype), ms in buckets.items():
                whole = owners[(bdev, bdtype)]
                sizes = [p.numel() for p in whole]
                z = self._noise(sum(sizes), bdev, bdtype)
                zs = [
                    _shard_of(zi.view(p.shape), p)
                    for zi, p in zip(z.split(sizes), whole, strict=True)
                ]
                torch._foreach_div_(ms, pi.to(bdev))
                torch._foreach_add_(ms, zs, alpha=nu_p)
            r2 = sum((self._sqnorm(ms, dev, sdtype) for ms in buckets.values()), V.new_zeros(()))
            r2 = self._allreduce(r2)
            scale = pi / r2.sqrt()
            for (bdev, _), ms in buckets.items():
                torch._foreach_mul_(ms, scale.to(bdev))
        st["P2"] = pi2
        return None
