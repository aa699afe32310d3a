"""Tests of the ECD optimizer against a float64 reference written from the equations."""

import io
import math
import warnings

import pytest
import torch
from torch import Tensor, nn

from symbreak.errors import CheckpointError, TrainingError
from symbreak.optim.ecd import ECD
from symbreak.optim.ecd_reference import ECDReference

SHAPES: list[tuple[int, ...]] = [(6, 4), (6,), (3, 6), (3,), (2, 3, 2), ()]
SIZES = [math.prod(s) for s in SHAPES]
D = sum(SIZES)
_gen = torch.Generator().manual_seed(1234)
X = torch.randn(8, 4, generator=_gen, dtype=torch.float64)
Y = torch.randn(8, 3, generator=_gen, dtype=torch.float64)


def init_tensors(seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [0.5 * torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]


def loss_fn(ts: list[Tensor]) -> Tensor:
    """A small smooth loss of tensors of several shapes (a tiny MLP plus coupled extras)."""
    W1, b1, W2, b2, S, t = ts
    out = torch.tanh(X @ W1.T + b1) @ W2.T + b2
    mse = ((out - Y) ** 2).mean()
    return mse + 0.1 * (S.tanh().sum() - 1.0) ** 2 + 0.2 * (t * b2.sum() - 0.3) ** 2


def make_closure(opt: torch.optim.Optimizer, params: list[Tensor]):
    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    return closure


def run_fast(
    n_steps: int,
    groups: list[dict] | None = None,
    lr_schedule: list[float] | None = None,
    **kw,
) -> tuple[list[Tensor], ECD]:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    if groups is None:
        opt = ECD(params, **kw)
    else:
        split = [dict(g, params=[params[i] for i in g["params"]]) for g in groups]
        opt = ECD(split, **kw)
    closure = make_closure(opt, params)
    for k in range(n_steps):
        if lr_schedule is not None:
            opt.param_groups[0]["lr"] = lr_schedule[k]
        opt.step(closure)
    return params, opt


def run_reference(n_steps: int, lr_schedule: list[float] | None = None, **kw) -> Tensor:
    ref = ECDReference(SIZES, **kw)
    theta = torch.cat([t.reshape(-1) for t in init_tensors()])
    for k in range(n_steps):
        ts = [
            x.reshape(s).clone().requires_grad_(True)
            for x, s in zip(theta.split(SIZES), SHAPES, strict=True)
        ]
        L = loss_fn(ts)
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(L, ts)])
        if lr_schedule is not None:
            ref.lr = lr_schedule[k]
        theta = ref.step(theta, g, float(L.detach()))
    return theta


def flat(params: list[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def momenta(opt: ECD, params: list[Tensor]) -> list[Tensor]:
    return [opt.state[p]["momentum"] for p in params]


def global_norm(ts: list[Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in ts)))


BASE = dict(lr=0.1, eta=4.0, F0=-1.0, seed=7)


@pytest.mark.parametrize("projection", ["global", "per_tensor"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("nu", [0.0, 0.3])
@pytest.mark.parametrize("cons_en", [True, False])
def test_matches_reference(projection: str, weight_decay: float, nu: float, cons_en: bool) -> None:
    kw = dict(BASE, projection=projection, weight_decay=weight_decay, nu=nu, cons_en=cons_en)
    params, opt = run_fast(50, **kw)
    theta = run_reference(50, **kw)
    assert opt.frozen_steps == 0
    diff = (flat(params) - theta).abs().max().item()
    assert diff < 1e-10, diff
    # and the run really moved
    assert (theta - torch.cat([t.reshape(-1) for t in init_tensors()])).norm() > 0.1


@pytest.mark.parametrize("projection", ["global", "per_tensor"])
def test_matches_reference_two_groups_and_auto_F0(projection: str) -> None:
    """Per-group lr and weight decay (the documented generalisation), nu > 0, F0='auto'."""
    groups = [
        dict(params=[0, 1], lr=0.1, weight_decay=0.02),
        dict(params=[2, 3, 4, 5], lr=0.05, weight_decay=0.0),
    ]
    kw = dict(eta=4.0, F0="auto", nu=0.2, projection=projection, seed=3)
    params, opt = run_fast(50, groups=groups, **kw)
    lr = torch.cat(
        [torch.full((n,), 0.1 if i < 2 else 0.05, dtype=torch.float64) for i, n in enumerate(SIZES)]
    )
    wd = torch.cat(
        [torch.full((n,), 0.02 if i < 2 else 0.0, dtype=torch.float64) for i, n in enumerate(SIZES)]
    )
    theta = run_reference(50, lr=lr, weight_decay=wd, **kw)
    diff = (flat(params) - theta).abs().max().item()
    assert diff < 1e-10, diff
    assert opt.frozen_steps == 0


def test_momentum_renormalised_and_displacement() -> None:
    for nu in (0.0, 0.5):
        params = [nn.Parameter(t.clone()) for t in init_tensors()]
        opt = ECD(params, lr=0.1, eta=4.0, F0=-1.0, nu=nu, seed=1)
        closure = make_closure(opt, params)
        dt = 0.1 / math.sqrt(4.0)
        for _ in range(20):
            before = flat(params)
            opt.step(closure)
            ms = momenta(opt, params)
            P2 = float(opt.state_dict()["ecd"]["P2"])
            pi = global_norm(ms)
            # after step 4 |p| = pi and P2 = pi^2 ...
            assert pi**2 == pytest.approx(P2, rel=1e-12)
            # ... so the next step's renormalisation c = 1/sqrt(P2) gives |c p| = 1
            assert pi / math.sqrt(P2) == pytest.approx(1.0, abs=1e-12)
            # theta moved by dt * pi
            assert (flat(params) - before).norm().item() == pytest.approx(dt * pi, rel=1e-10)


def test_first_step_starts_along_minus_gradient() -> None:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    L = loss_fn(params)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(L, params)])
    # with a tiny dt the first displacement is (almost exactly) along -g/|g|
    params2, _ = run_fast(1, lr=1e-8, eta=1.0, F0=-1.0)
    move = flat(params2) - flat(params)
    cos = torch.dot(move, -g) / (move.norm() * g.norm())
    assert cos.item() == pytest.approx(1.0, abs=1e-9)
    assert move.norm().item() == pytest.approx(1e-8, rel=1e-6)


def test_frozen_step_moves_nothing_and_warns_once() -> None:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    opt = ECD(params, lr=0.1, eta=4.0, F0=100.0)
    closure = make_closure(opt, params)
    before = flat(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step(closure)
    assert torch.equal(flat(params), before)
    assert opt.frozen_steps == 3
    assert all("momentum" not in opt.state[p] for p in params)
    ours = [w for w in caught if "ECD step frozen" in str(w.message)]
    assert len(ours) == 1
    assert "lower optim.F0" in str(ours[0].message) and "F0='auto'" in str(ours[0].message)
    # lowering F0 unfreezes it; the count is kept
    for group in opt.param_groups:
        group["F0"] = -1.0
    opt.step(closure)
    assert not torch.equal(flat(params), before)
    assert opt.frozen_steps == 3
    assert opt.state_dict()["ecd"]["frozen_steps"] == 3


def test_lr_is_read_from_param_groups() -> None:
    schedule = [0.1] * 5 + [0.02] * 5 + [0.3] * 5
    params, opt = run_fast(15, lr_schedule=schedule, **BASE)
    theta = run_reference(15, lr_schedule=schedule, **BASE)
    assert (flat(params) - theta).abs().max().item() < 1e-10
    # the displacement is dt * pi with the CURRENT lr; lr = 0 stops the motion
    closure = make_closure(opt, params)
    for lr in (0.05, 0.4, 0.0):
        opt.param_groups[0]["lr"] = lr
        before = flat(params)
        opt.step(closure)
        pi = global_norm(momenta(opt, params))
        dt = lr / math.sqrt(BASE["eta"])
        assert (flat(params) - before).norm().item() == pytest.approx(dt * pi, rel=1e-10, abs=0)


def test_params_without_grad_are_skipped() -> None:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    unused = nn.Parameter(torch.ones(5, dtype=torch.float64))
    opt = ECD([*params, unused], **BASE)
    closure = make_closure(opt, params)
    for _ in range(10):
        opt.step(closure)
    assert unused.grad is None
    assert torch.equal(unused.detach(), torch.ones(5, dtype=torch.float64))
    assert "momentum" not in opt.state[unused]
    # D counts only the parameters with gradients: identical to a run without `unused`
    assert opt.state_dict()["ecd"]["D"] == D
    ref_params, _ = run_fast(10, **BASE)
    assert torch.equal(flat(params), flat(ref_params))

    # a parameter that sits a step out keeps its value and its momentum
    W1 = params[0]
    opt.zero_grad()
    loss = loss_fn(params)
    loss.backward()
    W1.grad = None
    W1_before, m_before = W1.detach().clone(), opt.state[W1]["momentum"].clone()
    opt.step(loss=loss)
    assert torch.equal(W1.detach(), W1_before)
    assert torch.equal(opt.state[W1]["momentum"], m_before)
    assert opt.state_dict()["ecd"]["D"] == D - W1.numel()

    # a parameter whose first gradient comes after the first step starts with zero momentum
    opt.zero_grad()
    loss = loss_fn(params) + (unused**2).sum()
    loss.backward()
    opt.step(loss=loss)
    assert "momentum" in opt.state[unused]
    assert not torch.equal(unused.detach(), torch.ones(5, dtype=torch.float64))


def test_closure_and_loss_conventions_agree() -> None:
    p1, _ = run_fast(10, nu=0.3, **BASE)
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    opt = ECD(params, nu=0.3, **BASE)
    for _ in range(10):
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        assert opt.step(loss=loss) is loss
    assert torch.equal(flat(p1), flat(params))
    # a float loss works too
    opt.zero_grad()
    loss = loss_fn(params)
    loss.backward()
    opt.step(loss=loss.item())


def test_step_arguments_are_checked() -> None:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    opt = ECD(params, **BASE)
    closure = make_closure(opt, params)
    with pytest.raises(ValueError, match="exactly one"):
        opt.step()
    with pytest.raises(ValueError, match="exactly one"):
        opt.step(closure, loss=torch.tensor(1.0))


def test_hyperparameters_are_checked() -> None:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    with pytest.raises(ValueError, match="eta must be the same"):
        ECD([{"params": params[:2], "eta": 2.0}, {"params": params[2:]}], **BASE)
    with pytest.raises(ValueError, match="projection"):
        ECD(params, projection="per_param")
    with pytest.raises(ValueError, match="F0"):
        ECD(params, F0="lowest")
    # lr and weight_decay may differ per group
    ECD([{"params": params[:2], "lr": 0.5, "weight_decay": 0.1}, {"params": params[2:]}], **BASE)


def test_training_errors() -> None:
    params = [nn.Parameter(t.clone()) for t in init_tensors()]
    opt = ECD(params, **BASE)
    for p in params:
        p.grad = torch.zeros_like(p)
    with pytest.raises(TrainingError, match="first gradient"):
        opt.step(loss=1.0)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(TrainingError, match="not finite"):
        opt.step(loss=float("nan"))
    with pytest.raises(CheckpointError):
        opt.load_state_dict(torch.optim.SGD(params, lr=0.1).state_dict())


def test_auto_F0_does_not_freeze_on_decreasing_loss() -> None:
    target = torch.linspace(-1.0, 1.0, 50, dtype=torch.float64)
    w = nn.Parameter(torch.zeros(50, dtype=torch.float64))
    opt = ECD([w], lr=0.05, eta=1.0, F0="auto")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = ((w - target) ** 2).sum()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(40)]
    assert opt.frozen_steps == 0
    assert losses[-1] < 0.5 * losses[0]
    assert opt.effective_F0 == pytest.approx(min(losses) - 1.0)


def test_no_noise_drawn_when_nu_is_zero() -> None:
    _, opt = run_fast(5, **BASE)
    states = opt.state_dict()["ecd"]["generator_states"]
    fresh = torch.Generator().manual_seed(BASE["seed"]).get_state()
    assert all(torch.equal(s, fresh) for s in states.values())


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.net(x)


@pytest.mark.parametrize("nu", [0.0, 0.4])
def test_resume_is_bit_for_bit(nu: float) -> None:
    x, y = X.float(), Y.float()

    def train(model: TinyNet, opt: ECD, n: int) -> None:
        for _ in range(n):

            def closure() -> Tensor:
                opt.zero_grad()
                loss = ((model(x) - y) ** 2).mean()
                loss.backward()
                return loss

            opt.step(closure)

    kw = dict(lr=0.05, eta=2.0, F0=-1.0, nu=nu, weight_decay=0.01)
    torch.manual_seed(0)
    model = TinyNet()
    opt = ECD(model.parameters(), seed=11, **kw)
    train(model, opt, 20)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    train(model, opt, 20)

    torch.manual_seed(1)  # a different init, overwritten by the checkpoint
    model2 = TinyNet()
    opt2 = ECD(model2.parameters(), seed=999, **kw)  # a different seed, restored too
    buffer.seek(0)
    ckpt = torch.load(buffer)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optim"])
    train(model2, opt2, 20)

    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["momentum"], opt2.state[q]["momentum"])
    sd, sd2 = opt.state_dict()["ecd"], opt2.state_dict()["ecd"]
    assert torch.equal(sd["P2"], sd2["P2"]) and sd["step"] == sd2["step"] == 40
    if nu > 0:
        assert torch.equal(sd["generator_states"]["cpu"], sd2["generator_states"]["cpu"])
