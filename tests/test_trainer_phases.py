"""The trainer's parts: one TrainStep for training and the benchmark, task metrics handed in as
callables, the loop state that a checkpoint stores."""

from __future__ import annotations

import math

import pytest
import torch

from symbreak.data import load_config
from symbreak.model import GPT
from symbreak.optim import build_optimizer
from symbreak.train.checkpoint import read_state, resolve_checkpoint
from symbreak.train.metrics import read_metrics
from symbreak.train.step import TrainStep
from symbreak.train.trainer import LogWindow, LoopState, train

TINY = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.block_size=16",
    "model.vocab_size=64",
    "data.source=addition",
    "data.addition_train=200",
    "data.addition_val=50",
    "train.batch_size=2",
    "train.eval_tokens=64",
    "train.progress=false",
    "optim.lr=1e-2",
]


def _model_and_batches(seed: int = 0):
    cfg = load_config(overrides=[*TINY, "sb.q=true", "sb.v=true", "optim.name=ecd"])
    torch.manual_seed(seed)
    model = GPT(cfg.model, cfg.sb)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (2, 16), generator=gen)
    y = torch.randint(0, 64, (2, 16), generator=gen)
    return cfg, model, [(x[:1], y[:1]), (x[1:], y[1:])]


def test_train_step_equals_the_written_out_step_in_float64():
    """Forward/backward of each micro-batch, loss/accum, then the optimizer with the mean loss:
    TrainStep does exactly that (ECD receives the loss, so the loss it is handed matters)."""
    cfg, model, mbs = _model_and_batches()
    ref = GPT(cfg.model, cfg.sb)
    ref.load_state_dict(model.state_dict())
    model.double(), ref.double()
    opt, ref_opt = (build_optimizer(m, cfg.optim, seed=0) for m in (model, ref))
    result = TrainStep(model, opt)(3, mbs)

    ref.train()
    ref.pin_biases(3)
    total = 0.0
    for x, y in mbs:
        _, loss = ref(x, y)
        (loss / len(mbs)).backward()
        total += loss.item()
    ref_opt.step(loss=torch.tensor(total / len(mbs), dtype=torch.float64))
    assert result.updated and not result.stop
    assert result.loss == pytest.approx(total / len(mbs), rel=1e-12)
    for (name, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), name
    assert all(p.grad is None for p in model.parameters())


def test_a_non_finite_loss_updates_nothing():
    _, model, mbs = _model_and_batches()
    cfg = load_config(overrides=[*TINY, "optim.name=adamw"])
    opt = build_optimizer(model, cfg.optim, seed=0)
    with torch.no_grad():
        model.wte.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = TrainStep(model, opt)(0, mbs)
    assert not result.updated and math.isnan(result.loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v.nan_to_num(7.0), before[k].nan_to_num(7.0)), k
    assert not opt.state  # the optimizer never stepped
    assert all(p.grad is None for p in model.parameters())


def test_bench_train_times_the_trainers_step_object():
    from symbreak.bench.train import _Run

    cfg = load_config(overrides=TINY)
    run = _Run(cfg, torch.device("cpu"), torch.float32, False, 0, "eager")
    assert isinstance(run.train_step, TrainStep)
    _, _, mbs = _model_and_batches()
    assert run.step(0, mbs) > 0


def test_task_metrics_are_logged_at_every_evaluation_and_only_when_given(tmp_path):
    calls = []

    def count_params(model: torch.nn.Module) -> float:
        calls.append(model.training)
        return float(sum(p.numel() for p in model.parameters()))

    base = [*TINY, "train.max_steps=4", "train.eval_every=2", f"train.out_dir={tmp_path}"]
    train(load_config(overrides=[*base, "train.name=with"]), task_metrics={"size": count_params})
    rows = [r for r in read_metrics(tmp_path / "with" / "metrics.csv") if r["val_loss"]]
    assert [r["step"] for r in rows] == ["0", "2", "4"]
    assert len({r["size"] for r in rows}) == 1 and float(rows[0]["size"]) > 0
    assert len(calls) == 3

    train(load_config(overrides=[*base, "train.name=without"]))
    assert "exact_match" not in read_metrics(tmp_path / "without" / "metrics.csv")[0]


def test_the_loop_state_round_trips_through_a_checkpoint(tmp_path):
    cfg = load_config(overrides=[*TINY, "train.max_steps=3", "train.log_every=2",
                                 f"train.out_dir={tmp_path}", "train.name=r"])  # fmt: skip
    summary = train(cfg)
    saved = read_state(resolve_checkpoint(tmp_path / "r"))
    state = LoopState.from_state(saved)
    assert state.step == 3 == summary.steps
    assert state.to_state() == {k: saved[k] for k in state.to_state()}
    assert isinstance(saved["window"], list) and len(saved["window"]) == 4
    assert state.val_loss == pytest.approx(summary.final_val_loss)


def test_log_window_means_only_finite_losses():
    w = LogWindow()
    w.add(2.0, 10, 0.5)
    w.add(float("nan"), 10, 0.5)
    w.add(4.0, 10, 1.0)
    assert w.mean_loss() == 3.0 and w.tok_per_s() == 15.0
    assert LogWindow.from_list(w.to_list()) == w
    assert math.isnan(LogWindow().mean_loss())
