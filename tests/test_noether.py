"""Noether charges of the attention rotations: the generators are symmetries, and the charges
obey the laws derived in symbreak.train.noether (float64, exact settings)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from symbreak.config import Config
from symbreak.data import load_config
from symbreak.model import GPT
from symbreak.optim import build_optimizer, optimizer_step
from symbreak.train.noether import (
    charges,
    momentum_state_key,
    optimizer_momentum,
    tangent,
)

L, H, D, V, T, B = 2, 2, 8, 64, 8, 4
MODEL = [f"model.n_layer={L}", f"model.n_head={H}", f"model.n_embd={H * D}",
         f"model.block_size={T}", f"model.vocab_size={V}"]
STEPS = 30


def make(*overrides: str) -> tuple[GPT, Config]:
    cfg = load_config(overrides=[*MODEL, *overrides])
    torch.manual_seed(0)
    model = GPT(cfg.model, cfg.sb).double()
    with torch.no_grad():  # GPT starts its biases at 0: give the bias terms something to carry
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    model.train()
    return model, cfg


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    xy = torch.randint(0, V, (B, T + 1), generator=gen)
    return xy[:, :-1], xy[:, 1:]


def train(model: GPT, opt: torch.optim.Optimizer, steps: int, start: int = 0, clip: float = 0.0):
    """Yield the charges after each of ``steps`` optimizer steps (the trainer's step, in f64)."""
    key, _ = momentum_state_key(opt)
    for step in range(start, start + steps):
        model.pin_biases(step)
        _, loss = model(*batch(step))
        terms = model.moe_terms()  # a mixture of experts' router penalty, as TrainStep adds it
        (loss if terms is None else loss + terms.penalty).backward()
        if clip:  # global-norm clipping scales g by one number: the laws survive it
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer_step(opt, loss.detach())
        opt.zero_grad(set_to_none=True)
        yield charges(model, optimizer_momentum(opt, key))


def ecd(*overrides: str) -> tuple[GPT, torch.optim.Optimizer]:
    model, cfg = make("optim.name=ecd", "optim.lr=0.3", "optim.F0=0.0",
                      "optim.weight_decay=0.01", *overrides)
    return model, build_optimizer(model, cfg.optim, seed=0)


def max_relative(c) -> float:
    return c.relative().max().item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a @ b / (a.norm() * b.norm())).item()


# ---- the generators are the symmetries, and the charge is <dtheta(A), P> ------------------


@pytest.mark.parametrize(
    ("sb", "broken"),
    [
        ([], ()),
        (["sb.q=true"], ("qk",)),
        (["sb.v=true"], ("vo",)),
        (["sb.q=true", "sb.v=true"], ("qk", "vo")),
        (["sb.k=true"], ()),  # bK cancels in the softmax
        (["sb.mode=learned", "sb.per_head=true", "sb.q=true", "sb.k=true", "sb.v=true"], ()),
        (["model.mlp=moe", "model.moe_experts=4", "model.moe_z_loss=0.001"], ()),
        (["model.mlp=moe", "model.moe_experts=4", "sb.q=true", "sb.v=true"], ("qk", "vo")),
    ],
)
def test_loss_is_flat_along_the_generators_exactly_when_symmetric(sb, broken):
    model, _ = make(*sb)
    model.pin_biases(0)
    params = list(model.parameters())
    _, loss = model(*batch(0))
    terms = model.moe_terms()  # the training objective: the router penalty is flat too
    loss = loss if terms is None else loss + terms.penalty
    g = dict(zip(params, torch.autograd.grad(loss, params), strict=True))
    gnorm = torch.cat([v.reshape(-1) for v in g.values()]).norm()
    gen = torch.Generator().manual_seed(3)
    for sector in ("qk", "vo"):
        for _ in range(3):
            a = torch.randn(L, H, D, D, generator=gen, dtype=torch.float64)
            zero = torch.zeros_like(a)
            dtheta = tangent(model, *((a, zero) if sector == "qk" else (zero, a)))
            slope = sum((dtheta[p] * g[p]).sum() for p in dtheta)
            tnorm = torch.cat([v.reshape(-1) for v in dtheta.values()]).norm()
            rel = abs(slope.item()) / (tnorm * gnorm).item()
            if sector in broken:
                assert rel > 1e-7, (sector, rel)
            else:
                assert rel < 1e-10, (sector, rel)
            # the charge matrices give the same number: Q(A) = <A, L> = <dtheta(A), P> (P = g)
            c = charges(model, g.__getitem__)
            A = 0.5 * (a - a.mT)
            q = (A * (c.qk if sector == "qk" else c.vo)).sum()
            assert torch.allclose(q, slope, rtol=1e-10, atol=1e-14 * (tnorm * gnorm).item())


# ---- law 1: ECD ----------------------------------------------------------------------------


LEARNED = ["sb.mode=learned", "sb.q=true", "sb.v=true"]


MOE = ["model.mlp=moe", "model.moe_experts=4", "model.moe_z_loss=0.001"]


@pytest.mark.parametrize("sb", [[], ["sb.k=true"], [*LEARNED, "sb.per_head=true"], MOE],
                         ids=["sym", "bK", "learned", "moe"])  # fmt: skip
def test_ecd_charges_start_at_zero_and_stay_zero(sb):
    """With a mixture-of-experts MLP too: the router and experts sit after the attention's
    output, which the rotations leave unchanged, so the attention charges obey the same law."""
    model, opt = ecd(*sb)
    worst = max(max_relative(c) for c in train(model, opt, STEPS))
    assert worst < 1e-12


def test_a_learned_bias_shared_by_the_heads_breaks_the_per_head_charges():
    model, opt = ecd(*LEARNED)  # only a common rotation of all heads of a layer survives
    *_, last = train(model, opt, STEPS)
    assert last.relative().min() > 1e-8


@pytest.mark.parametrize("sb", [[], ["sb.k=true"]])
def test_ecd_charges_keep_their_direction_from_a_charged_momentum(sb):
    model, opt = ecd("optim.nu=0.5", *sb)
    (start,) = train(model, opt, 1)  # one noisy step charges the momentum
    assert max_relative(start) > 1e-4
    for group in opt.param_groups:
        group["nu"] = 0.0
    v0 = start.vector()
    vectors = [c.vector() for c in train(model, opt, STEPS, start=1)]
    assert min(cosine(v, v0) for v in vectors) > 1 - 1e-10
    # ... while the charges themselves change (ECD rescales p at every step)
    assert abs(vectors[-1].norm() / v0.norm() - 1) > 1e-6


@pytest.mark.parametrize(
    ("sb", "moved"), [(["sb.q=true"], 0), (["sb.v=true"], 1), (["sb.q=true", *MOE], 0)]
)
def test_ecd_charges_move_off_zero_when_the_symmetry_is_broken(sb, moved):
    model, opt = ecd(*sb)
    *_, last = train(model, opt, STEPS)
    rel = last.relative()
    assert rel[..., moved].min() > 1e-6
    assert rel[..., 1 - moved].max() < 1e-12  # the other sector is still symmetric


def test_ecd_per_tensor_projection_keeps_only_the_bias_free_qk_charge():
    model, opt = ecd("optim.projection=per_tensor", "model.bias=false")
    *_, last = train(model, opt, STEPS)
    rel = last.relative()
    assert rel[..., 0].max() < 1e-12  # Q-K lives in c_attn.weight alone: a_l Q = 0
    assert rel[..., 1].min() > 1e-6  # V-O spans c_attn.weight and c_proj.weight


# ---- law 2: SGD heavy ball and Nesterov ------------------------------------------------------


def sgd(nesterov: bool, velocity: float, mu: float = 0.9, lr: float = 0.05):
    model, cfg = make("optim.name=sgdm", f"optim.lr={lr}", f"optim.momentum={mu}",
                      f"optim.nesterov={str(nesterov).lower()}", "optim.weight_decay=0.01",
                      f"optim.init_velocity_std={velocity}")
    return model, build_optimizer(model, cfg.optim, seed=0)


def test_heavy_ball_charges_decay_as_mu_to_the_t():
    mu = 0.9
    model, opt = sgd(False, 0.1, mu)
    q0 = charges(model, optimizer_momentum(opt, "momentum_buffer")).vector()
    assert q0.norm() > 0
    for t, c in enumerate(train(model, opt, STEPS), start=1):
        expected = mu**t * q0
        assert (c.vector() - expected).norm() / expected.norm() < 1e-10, t


@pytest.mark.parametrize("clip", [0.0, 0.1])
def test_heavy_ball_charges_stay_zero_from_a_zero_buffer(clip):
    model, opt = sgd(False, 0.0)
    assert max(max_relative(c) for c in train(model, opt, STEPS, clip=clip)) < 1e-12


@pytest.mark.parametrize("velocity", [0.0, 0.1])
def test_nesterov_law(velocity):
    """Q(t+1) = mu (Q(t) - lr omega(b(t+1), b(t))), with omega the same charge form."""
    mu, lr = 0.9, 0.05
    model, opt = sgd(True, velocity, mu, lr)
    # copies: torch updates the buffers in place
    buffers = {p: opt.state[p]["momentum_buffer"].clone() for p in opt.state}
    q = charges(model, optimizer_momentum(opt, "momentum_buffer")).vector()
    worst, sources = 0.0, []
    for c in train(model, opt, STEPS):
        new = {p: opt.state[p]["momentum_buffer"] for p in model.parameters()}
        # omega(b', b) = <𝒜 b', b>: charges with x = b' in place of theta and z = b
        source = charges(model, buffers.get, weight=new.get).vector()
        expected = mu * (q - lr * source)
        q = c.vector()
        # relative to the terms' size; from a zero buffer the first step's terms are all 0, so
        # the floor is the charge scale |theta| |b| times float64's resolution
        scale = max(expected.norm().item(), 1e-6 * (c.x_norm * c.z_norm).max().item())
        worst = max(worst, (q - expected).norm().item() / scale)
        sources.append((lr * source).norm().item() / max(q.norm().item(), 1e-300))
        buffers = {p: b.clone() for p, b in new.items()}
    assert worst < 1e-10
    assert max(sources) > 1e-6  # the source term matters: Nesterov conserves nothing exactly


# ---- train.log_noether ------------------------------------------------------------------------

RUN = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=16",
       "train.batch_size=2", "train.eval_tokens=256", "train.eval_every=0", "train.log_every=2",
       "train.progress=false", "train.dtype=fp32", "train.log_noether=true"]


def run_train(out, cache, name, *extra):
    from symbreak.train.trainer import train as train_run

    cfg = load_config(overrides=[*RUN, f"train.out_dir={out}", f"data.cache_dir={cache}",
                                 f"train.name={name}", *extra])
    return train_run(cfg)


def noether_rows(run_dir):
    from symbreak.train.metrics import read_metrics

    return read_metrics(run_dir / "noether.csv")


@pytest.mark.slow
def test_noether_csv_of_a_resumed_run_equals_an_uninterrupted_one(tmp_path, corpus_cache):
    opt = ["optim.name=ecd", "optim.F0=auto", "sb.q=true", "sb.v=true"]
    tb = importlib.util.find_spec("tensorboard") is not None
    tensorboard = f"train.tensorboard={tb}".lower()
    run_train(tmp_path, corpus_cache, "full", "train.max_steps=6", tensorboard, *opt)
    run_train(tmp_path, corpus_cache, "split", "train.max_steps=4", *opt)
    split = tmp_path / "split" / "noether.csv"
    with open(split, "a") as f:  # rows of a session that died after its checkpoint at step 4
        f.write("5,0,0,qk,1,1\n5,0,0,vo,1")
    run_train(tmp_path, corpus_cache, "split", "train.max_steps=6", *opt)
    full = noether_rows(tmp_path / "full")
    assert noether_rows(tmp_path / "split") == full
    assert [r["step"] for r in full[:: 2 * 2 * 2]] == ["2", "4", "6"]  # log_every=2, 2x2x2 rows
    assert {r["sector"] for r in full} == {"qk", "vo"}
    assert all(float(r["relative"]) > 1e-4 for r in full)  # bQ, bV: the charges moved
    if tb:  # the same rows go to TensorBoard
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "full" / "tensorboard"))
        acc.Reload()
        assert "noether/qk/L1H1/relative" in acc.Tags()["scalars"]
        (row,) = [r for r in full if (r["step"], r["layer"], r["head"], r["sector"])
                  == ("2", "0", "0", "vo")]
        event = acc.Scalars("noether/vo/L0H0/charge")[0]
        assert event.step == 2 and event.value == pytest.approx(float(row["charge"]), rel=1e-5)


def test_log_noether_without_momentum_or_qkv_bias_logs_zeros_with_a_note(tmp_path, corpus_cache):
    # plain SGD (momentum 0) keeps no buffer; model.bias=false drops the c_* terms
    with pytest.warns(RuntimeWarning, match="logged as 0"):
        run_train(tmp_path, corpus_cache, "plain", "train.max_steps=2", "optim.name=sgdm",
                  "optim.momentum=0.0", "optim.nesterov=false", "model.bias=false")
    rows = noether_rows(tmp_path / "plain")
    assert len(rows) == 2 * 2 * 2 and all(float(r["charge"]) == 0.0 for r in rows)


def test_log_noether_with_soap_is_skipped_with_a_note(tmp_path):
    from symbreak.train.noether_log import NoetherLog

    model, cfg = make("optim.name=soap")
    opt = build_optimizer(model, cfg.optim)
    with pytest.warns(RuntimeWarning, match="no charges are computed"):
        log = NoetherLog(tmp_path / "noether.csv", model, opt)
    assert log.log(10) == {}
    log.close()
    assert not (tmp_path / "noether.csv").exists()


# ---- symbreak noether RUN... --out FILE.png ----------------------------------------------------


def fake_run(root, name: str, optim: str, zero_qk: bool = False):
    """A run directory with a config.toml and a noether.csv as NoetherLog writes them."""
    from symbreak.train.metrics import MetricsWriter
    from symbreak.train.noether_log import COLUMNS

    run = root / name
    run.mkdir()
    (run / "config.toml").write_text(f'[optim]\nname = "{optim}"\n[sb]\nq = true\n')
    gen = torch.Generator().manual_seed(len(name))
    with MetricsWriter(run / "noether.csv", columns=COLUMNS) as w:
        for step in (10, 20, 30):
            for layer in range(2):
                for head in range(3):
                    for sector in ("qk", "vo"):
                        v = 0.0 if zero_qk and sector == "qk" else torch.rand(1, generator=gen)
                        w.write(step=step, layer=layer, head=head, sector=sector,
                                charge=float(v), relative=float(v) / 10)
    return run


def test_noether_plot_command(tmp_path, capsys):
    from symbreak.analysis.noether_plot import load_run
    from symbreak.cli import main

    a = fake_run(tmp_path, "sym", "ecd", zero_qk=True)
    b = fake_run(tmp_path, "adam", "adamw")
    out = tmp_path / "fig" / "charges.png"
    assert main(["noether", str(a), str(b), "--out", str(out), "--quantity", "relative"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    text = capsys.readouterr().out
    assert "sym (ecd, bQ)" in text and "not conserved" in text and f"wrote {out}" in text
    run = load_run(b, "relative")
    assert run.values.shape == (3, 2, 3, 2) and run.steps.tolist() == [10, 20, 30]
    csv_rows = (b / "noether.csv").read_text().splitlines()
    _, layer, head, sector, _, rel = csv_rows[-1].split(",")
    assert run.values[-1, int(layer), int(head), 1] == float(rel) and sector == "vo"


def test_noether_plot_of_a_run_without_noether_csv_says_so(tmp_path, capsys):
    from symbreak.cli import main

    (tmp_path / "plain").mkdir()
    assert main(["noether", str(tmp_path / "plain"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no noether.csv" in err[0] and "train.log_noether=true" in err[0]
    assert not (tmp_path / "x.png").exists()
