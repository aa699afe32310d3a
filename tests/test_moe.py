"""The mixture-of-experts MLP (``model.mlp=moe``): routing, the balancing losses and the
experts against a naive per-token reference in float64, its place in training (every optimizer,
the logged statistics) and the combinations it refuses."""

from __future__ import annotations

import pytest
import torch

from symbreak.cli import main
from symbreak.config import Config, ModelConfig
from symbreak.data import load_config
from symbreak.errors import ConfigError
from symbreak.model import GPT, MLP, MoE
from symbreak.optim import build_optimizer
from symbreak.optim.factory import param_groups
from symbreak.train.step import TrainStep

C, V = 8, 29


def moe_cfg(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=2, n_embd=C, block_size=16, vocab_size=V, mlp="moe",
                moe_experts=8, moe_top_k=2)  # fmt: skip
    return ModelConfig(**{**base, **kw})


def make_moe(seed: int = 0, **kw) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(moe_cfg(**kw), n_layer=2).double()
    with torch.no_grad():  # non-zero biases, so that their indexing is checked too
        for p in (moe.fc_bias, moe.proj_bias):
            if p is not None:
                p.normal_(0, 0.1)
    return moe


def reference(moe: MoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token by token, straight from the definitions (mlp.py's docstring): ``(y, aux, z)``."""
    E, k = moe.n_experts, moe.top_k
    ys, counts, prob_sum, z = [], [0] * E, torch.zeros(E, dtype=x.dtype), 0.0
    for x_t in x:
        logits = moe.router.weight @ x_t
        p = torch.softmax(logits, dim=-1)
        chosen = sorted(range(E), key=lambda e: (-p[e].item(), e))[:k]  # ties: lower index
        w = p[chosen] / p[chosen].sum()
        y = torch.zeros_like(x_t)
        for w_e, e in zip(w, chosen, strict=True):
            h = x_t @ moe.fc_weight[e] + moe.fc_bias[e]
            if moe.prelu_slope is not None:
                h = torch.where(h >= 0, h, moe.prelu_slope[e] * h)
            else:
                h = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
            y = y + w_e * (h @ moe.proj_weight[e] + moe.proj_bias[e])
            counts[e] += 1
        ys.append(y)
        prob_sum += p
        z += torch.logsumexp(logits, dim=-1) ** 2
    n = len(x)
    f = torch.tensor(counts, dtype=x.dtype) / (n * k)
    return torch.stack(ys), E * (f * prob_sum / n).sum(), z / n


@pytest.mark.parametrize("activation", ["prelu", "gelu"])
def test_forward_and_losses_equal_the_per_token_reference(activation):
    moe = make_moe(activation=activation)
    x = torch.randn(3, 7, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = moe(x)
        ref, aux, z = reference(moe, x.reshape(-1, C))
    assert torch.allclose(y.reshape(-1, C), ref, atol=1e-10, rtol=0)
    assert ref.abs().max() > 1e-3  # not vacuous
    assert torch.allclose(moe.aux, aux, atol=1e-12, rtol=0)
    assert torch.allclose(moe.z, z, atol=1e-10, rtol=0)
    assert torch.isclose(moe.load.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_ties_at_the_top_k_boundary_go_to_the_lower_expert_index():
    """Integer inputs and router rows make the logits exact, so identical rows tie exactly;
    experts 1..7 share one row: a token either picks expert 0 and then expert 1 of the seven
    tied, or two of the tied, 1 and 2."""
    moe = make_moe()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        row = torch.randint(-2, 3, (C,), generator=g).double()
        moe.router.weight.copy_(row.expand(8, C))
        moe.router.weight[0] = torch.randint(-2, 3, (C,), generator=g).double()
    x = torch.randint(-3, 4, (40, C), generator=g).double()
    with torch.no_grad():
        _, probs, chosen, _ = moe.route(x)
        y = moe(x)
        ref, aux, _ = reference(moe, x)
    assert (probs[:, 1:] == probs[:, 1:2]).all()  # the ties are exact
    first = probs[:, 0] >= probs[:, 1]  # (an exact tie with expert 0 picks 0 too)
    assert first.any() and (~first).any()  # both kinds of token occur
    assert (chosen[first] == torch.tensor([0, 1])).all()
    assert (chosen[~first] == torch.tensor([1, 2])).all()
    assert torch.allclose(y, ref, atol=1e-10, rtol=0)
    assert torch.allclose(moe.aux, aux, atol=1e-12, rtol=0)


def test_gradients_reach_the_router_and_every_expert_that_got_tokens():
    moe = make_moe()
    x = torch.randn(3, C, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (moe(x).square().sum() + moe.aux).backward()
    assert moe.router.weight.grad.abs().sum() > 0
    used = moe.load > 0
    assert 0 < used.sum() < 8  # 3 tokens x 2 slots: some experts idle
    for p in (moe.fc_weight, moe.proj_weight, moe.fc_bias, moe.proj_bias, moe.prelu_slope):
        per_expert = p.grad.reshape(8, -1).abs().sum(dim=1)
        assert (per_expert[used] > 0).all()
        assert (per_expert[~used] == 0).all()  # a zero gradient, not None: DDP needs it


@pytest.mark.parametrize("activation", ["prelu", "gelu"])
def test_one_expert_top_1_is_the_dense_mlp(activation):
    cfg = moe_cfg(activation=activation, moe_experts=1, moe_top_k=1)
    torch.manual_seed(0)
    dense, moe = MLP(cfg).double(), MoE(cfg, n_layer=2).double()
    with torch.no_grad():
        dense.c_fc.bias.normal_(0, 0.1)
        moe.fc_weight[0] = dense.c_fc.weight.T
        moe.fc_bias[0] = dense.c_fc.bias
        moe.proj_weight[0] = dense.c_proj.weight.T
        moe.proj_bias[0] = dense.c_proj.bias
        if activation == "prelu":
            moe.prelu_slope[0] = dense.act.weight
    x = torch.randn(2, 5, C, dtype=torch.float64)
    assert torch.allclose(moe(x), dense(x), atol=1e-12, rtol=0)
    assert moe.aux.item() == pytest.approx(1.0)


def test_active_parameters_count_top_k_of_the_experts():
    cfg = moe_cfg(moe_experts=4, moe_top_k=1)
    model = GPT(cfg)
    expert = C * 4 * C * 2 + 4 * C + C + 4 * C  # two matrices, two biases, the PReLU slopes
    assert model.num_params() - model.num_active_params() == 2 * 3 * expert  # 2 layers, 3 idle
    dense = GPT(moe_cfg(mlp="dense"))
    assert dense.num_active_params() == dense.num_params()


def test_stacked_expert_vectors_are_not_weight_decayed():
    model = GPT(moe_cfg())
    groups = param_groups(model, 0.1, decay_all=False)
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in model.named_parameters():
        if ".mlp." in name:
            want = name.endswith(("fc_weight", "proj_weight", "router.weight"))
            assert (id(p) in decayed) == want, name


@pytest.mark.parametrize("name", ["adamw", "sgdm", "soap", "ecd"])
def test_every_optimizer_takes_a_step_on_a_moe_model(name):
    cfg = Config.load(overrides=["model.mlp=moe", "model.n_layer=1", "model.n_embd=16",
                                 "model.n_head=2", "model.block_size=8", "model.moe_experts=4",
                                 f"optim.name={name}"], vocab_size=85)  # fmt: skip
    torch.manual_seed(0)
    model = GPT(cfg.model, cfg.sb)
    opt = build_optimizer(model, cfg.optim)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 85, (4, 8), generator=torch.Generator().manual_seed(0))
    step = TrainStep(model, opt)
    for s in range(2):  # SOAP's first step only sets up its preconditioners
        result = step(s, [(x, x.roll(-1, 1))])
    assert result.updated and result.moe is not None and len(result.moe) == 2 + 4
    for n, p in model.named_parameters():
        if n.endswith(("router.weight", "fc_weight", "proj_weight")):
            assert torch.isfinite(p).all() and not torch.equal(p, before[n]), n


def test_the_training_objective_adds_the_router_penalty_and_logs_apart():
    """TrainStep backpropagates CE + moe_aux_loss * aux + moe_z_loss * z, reports the CE as the
    loss and [aux, z, loads] as ``moe``; ECD receives the objective."""
    cfg = moe_cfg(moe_aux_loss=0.5, moe_z_loss=0.25, moe_experts=4)
    torch.manual_seed(0)
    model = GPT(cfg).double()
    x = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(0))
    y = x.roll(-1, 1)
    seen = {}

    class Probe(torch.optim.SGD):
        needs_loss = True

        def step(self, loss=None):  # type: ignore[override]
            seen["loss"] = float(loss)

    opt = Probe(model.parameters(), lr=0.0)
    result = TrainStep(model, opt)(0, [(x, y)])
    model.pin_biases(0)
    _, ce = model(x, y)
    t = model.moe_terms()
    assert result.loss == pytest.approx(ce.item(), abs=1e-12)
    assert seen["loss"] == pytest.approx((ce + 0.5 * t.aux + 0.25 * t.z).item(), abs=1e-12)
    assert result.moe[:2] == pytest.approx([t.aux.item(), t.z.item()], abs=1e-12)
    loads = torch.tensor(result.moe[2:]).view(2, 4)
    assert torch.allclose(loads.sum(dim=1), torch.ones(2, dtype=loads.dtype))


@pytest.mark.slow
def test_a_moe_run_logs_aux_loss_and_loads(tmp_path, corpus_cache):
    from symbreak.train.metrics import read_metrics
    from symbreak.train.trainer import train

    cfg = load_config(overrides=[
        "model.mlp=moe", "model.n_layer=1", "model.block_size=16", "model.moe_experts=4",
        "train.batch_size=2", "train.max_steps=3", "train.log_every=1", "train.eval_tokens=256",
        "train.progress=false", f"train.out_dir={tmp_path}", f"data.cache_dir={corpus_cache}",
    ])  # fmt: skip
    train(cfg)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    for r in rows[1:]:
        assert float(r["aux_loss"]) >= 1.0 - 1e-6  # E sum f P >= 1 ... at balance exactly 1
        loads = [float(r[f"load_L0E{e}"]) for e in range(4)]
        assert sum(loads) == pytest.approx(1.0, abs=1e-5)


# ---- what is refused, in one line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.moe_top_k=3", "model.moe_experts=2"], "model.moe_top_k: 3 is more than"),
        (["model.moe_experts=0"], "model.moe_experts: must be at least 1"),
        (["model.moe_top_k=0"], "model.moe_top_k: must be at least 1"),
        (["model.mlp=moe", "model.mask=bidirectional"], "model.mlp: moe is not supported"),
        (["model.mlp=mixture"], "model.mlp='mixture' is not one of"),
    ],
)
def test_bad_moe_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(overrides=overrides)
    assert "\n" not in str(err.value)


def test_export_of_a_moe_run_is_refused(tmp_path, make_run, capsys):
    run = make_run(tmp_path, "m", model={"mlp": "moe", "moe_experts": 2, "vocab_size": 50304})
    assert main(["export", str(run.path), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.mlp=moe") and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_bench_compare_dense_needs_a_moe_model():
    from symbreak.bench.train import bench_train

    with pytest.raises(ConfigError, match=r"--compare-dense .* add model.mlp=moe"):
        bench_train(["model.n_layer=1"], compare_dense=True)


@pytest.mark.slow
def test_bench_counts_active_flops_and_times_the_dense_models():
    from symbreak.bench.train import bench_train

    r = bench_train(["model.mlp=moe", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
                     "model.block_size=16", "train.batch_size=2", "model.moe_experts=4",
                     "data.source=shakespeare_char"],
                    steps=1, warmup=0, matmul_size=64, compare_dense=True)  # fmt: skip
    # the dense model of equal active size does the same model FLOPs per token, but for the
    # router and the k - 1 extra output biases
    assert r["dense_active"]["params_active"] < r["params_active"] < r["params"]
    assert abs(r["model_flops_per_token"] - r["dense_active"]["model_flops_per_token"]) < (
        0.02 * r["model_flops_per_token"]
    )
    assert r["dense"]["model_flops_per_token"] < r["model_flops_per_token"]
    assert r["moe_over_dense_active"] > 0 and r["state_bytes"] > r["dense"]["state_bytes"]
