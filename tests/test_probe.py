"""``symbreak probe``: the exact permutation table (float64) and the position probes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from symbreak.analysis.permutation import permutation_test
from symbreak.analysis.position import adjacency_score, probe_layer, probe_positions, ridge
from symbreak.analysis.sources import init_model, random_init_control
from symbreak.cli import main
from symbreak.data import prepare_texts

SMALL = ["model.n_head=2", "model.n_embd=16", "model.block_size=8", "model.vocab_size=31"]


def rel_change(pe: str, mask: str, layers: int, *extra: str) -> float:
    src = init_model([*SMALL, f"model.pos_encoding={pe}", f"model.mask={mask}",
                      f"model.n_layer={layers}", *extra])  # fmt: skip
    tokens = torch.randint(0, 31, (4, 8), generator=torch.Generator().manual_seed(0))
    res = permutation_test(src.model, tokens, [5, 8], permutations=2)
    assert res.dtype == "float64"
    return res.max_rel_change


# ---- the permutation table ------------------------------------------------------------------


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_nope_bidirectional_is_invariant_at_any_depth(layers: int) -> None:
    assert rel_change("none", "bidirectional", layers) < 1e-10


def test_nope_causal_one_layer_is_invariant_and_deeper_is_not() -> None:
    assert rel_change("none", "causal", 1) < 1e-10
    assert rel_change("none", "causal", 2) > 1e-4
    assert rel_change("none", "causal", 3) > 1e-4


@pytest.mark.parametrize("pe", ["learned", "sinusoidal", "rope", "alibi"])
@pytest.mark.parametrize("mask", ["causal", "bidirectional"])
def test_every_position_encoding_breaks_invariance(pe: str, mask: str) -> None:
    for layers in (1, 2):
        assert rel_change(pe, mask, layers) > 1e-6  # >= 4 orders of magnitude above rounding


def test_invariance_survives_symmetry_breaking_biases_and_residual_switches() -> None:
    extra = ("sb.q=true", "sb.v=true", "model.residual=none")
    assert rel_change("none", "bidirectional", 2, *extra) < 1e-10
    assert rel_change("none", "causal", 1, *extra) < 1e-10
    assert rel_change("none", "causal", 2, *extra) > 1e-4


# ---- position probes ---------------------------------------------------------------------


def test_ridge_recovers_a_linear_map() -> None:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 5, generator=g, dtype=torch.float64)
    W = torch.randn(5, 2, generator=g, dtype=torch.float64)
    W_hat, b = ridge(X, X @ W + 3.0, alpha=1e-9)
    torch.testing.assert_close(W_hat, W)
    torch.testing.assert_close(b, torch.full((2,), 3.0, dtype=torch.float64))
    W_big, _ = ridge(X, X @ W + 3.0, alpha=10.0)  # and the penalty shrinks
    assert W_big.norm() < 0.5 * W.norm()


def test_adjacency_score_and_probe_on_synthetic_states() -> None:
    T = 8
    pos = torch.arange(T, dtype=torch.float64)
    # a state that rotates smoothly with position: near positions alike, distant ones not
    smooth = torch.stack([torch.cos(pos / 3), torch.sin(pos / 3)], -1)
    S = smooth @ smooth.T
    assert adjacency_score(S) > 0.5
    noise = torch.randn(300, T, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    states = smooth.expand(300, T, 2) + 0.01 * noise
    r2, acc = probe_layer(states[:250], states[250:])
    assert r2 > 0.9 and acc > 0.5
    r2_shuffled, acc_shuffled = probe_layer(states[:250], states[250:], shuffle_seed=0)
    assert r2_shuffled < 0.05 and acc_shuffled < 0.3


def probe(pe: str, mask: str):
    src = init_model([f"model.pos_encoding={pe}", f"model.mask={mask}", "model.n_layer=2",
                      "model.n_head=2", "model.n_embd=32", "model.block_size=16",
                      "model.vocab_size=8"])  # fmt: skip
    # 8 token ids span 8 of 32 dimensions: a linear read-out can ignore them entirely
    tokens = torch.randint(0, 8, (72, 16), generator=torch.Generator().manual_seed(1))
    control = random_init_control(src.cfg)
    return probe_positions(src.label, src.model, control, tokens[:48], tokens[48:])


def test_learned_positions_are_recovered_at_layer_0() -> None:
    p = probe("learned", "causal")
    first = p.layers[0]
    assert first.r2 > 0.99 and first.accuracy > 0.95
    assert first.r2_shuffled < 0.1 and first.accuracy_shuffled < 0.2  # the control is null
    assert len(p.layers) == 3 and len(p.similarity) == 3 and len(p.similarity[0]) == 16


def test_nope_bidirectional_has_no_position_to_recover() -> None:
    p = probe("none", "bidirectional")
    for layer in p.layers:
        assert layer.r2 < 0.05 and layer.accuracy < 2 / 16
        assert abs(layer.adjacency) < 0.05


# ---- the command ------------------------------------------------------------------------


def test_permutation_cli_prints_the_table(capsys, tmp_path: Path) -> None:
    out = tmp_path / "perm.json"
    rc = main(["probe", "permutation", "--init", *SMALL, "model.pos_encoding=none",
               "model.mask=bidirectional", "model.n_layer=2", "--text", "random",
               "--lengths", "4,8", "--sequences", "3", "--permutations", "2",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "none" in text and "bidirectional" in text and " invariant" in text
    data = json.loads(out.read_text())
    assert data["results"][0]["invariant"] is True
    assert [r["n"] for r in data["results"][0]["lengths"]] == [4, 8]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_run) -> Path:
    """A run directory of a fresh 1-layer learned-PE model, with held-out text to read."""
    root = tmp_path_factory.mktemp("probe_runs")
    prepare_texts([("doc", "The cat sat on the mat. " * 300)], root / "data", show_progress=False)
    return make_run(root, "r", model={"block_size": 16}, sb={}, data=root / "data").path


def test_position_cli_on_a_run_writes_json_and_pngs(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "pos.json"
    rc = main(["probe", "position", str(run_dir), "--fit-sequences", "8",
               "--score-sequences", "4", "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "r@3" in capsys.readouterr().out
    data = json.loads(out.read_text())
    (r,) = data["runs"]
    assert r["length"] == 16 and len(r["layers"]) == 2 and r["chance_accuracy"] == 1 / 16
    assert out.with_suffix(".r2.png").stat().st_size > 0
    assert out.with_suffix(".similarity.png").stat().st_size > 0


def test_position_cli_writes_beside_the_run_by_default(run_dir: Path, capsys, monkeypatch):
    monkeypatch.chdir(run_dir.parent)
    rc = main(["probe", "position", str(run_dir), "--fit-sequences", "8",
               "--score-sequences", "4", "--no-plot"])  # fmt: skip
    assert rc == 0
    assert (run_dir / "probes" / "position-latest.json").is_file()
    assert not (run_dir.parent / "probe_position.json").exists()
    assert main(["probe", "position", "--init", "model.n_layer=1", "--no-plot"]) == 2
    assert "give --out" in capsys.readouterr().err


def test_permutation_cli_on_a_run(run_dir: Path, capsys) -> None:
    rc = main(["probe", "permutation", str(run_dir), "--lengths", "4,16", "--sequences", "2",
               "--permutations", "1"])  # fmt: skip
    assert rc == 0
    assert "not invariant" in capsys.readouterr().out  # learned positions


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["permutation", "RUN", "--lengths", "4,17"], "at most model.block_size=16"),
        (["position", "RUN", "--length", "32"], "model.block_size=16"),
        (["permutation", "RUN", "--sequences", "5000"], "fewer than the 5000 sequences"),
        (["permutation", "--init", "model.pos_encoding=rotary"], "model.pos_encoding='rotary'"),
        (["permutation", "--init", "model.n_layers=2"], "did you mean 'model.n_layer'"),
        (["permutation", "--init", "model.pos_encoding=rope", "model.n_embd=36"], "odd"),
        (["permutation", "no/such/run"], "does not exist"),
        (["permutation"], "pass a RUN_DIR or --init"),
        (["permutation", "RUN", "--init", "model.n_layer=1"], "not both"),
        (["permutation", "RUN", "--lengths", "2,4"], "at least 3"),
    ],
)
def test_bad_input_is_one_error_line(run_dir: Path, capsys, argv, message) -> None:
    argv = [str(run_dir) if a == "RUN" else a for a in argv]
    rc = main(["probe", *argv])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err
