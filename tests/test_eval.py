"""``eval``, ``compare`` and ``sample`` on tiny untrained run directories, plus strict loading."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from symbreak.cli import build_parser
from symbreak.data import (
    EOT_ID,
    GPT2_VOCAB_SIZE,
    load_data,
    prepare_texts,
    val_batches,
)
from symbreak.errors import CheckpointError, DataError, SymbreakError
from symbreak.eval.puzzles import CATEGORIES, ENTITIES
from symbreak.eval.sample import generate
from symbreak.runs import load_run
from symbreak.train.validation import evaluate_loss


def cli(*argv: object) -> int:
    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_run) -> dict[str, Path]:
    """Untrained 1-layer runs: "a" with checkpoints at steps 5, 10, 15 (recorded val_loss 7.0,
    6.5, 6.8), "b" with one at step 5 (7.0)."""
    root = tmp_path_factory.mktemp("runs")
    text = " ".join(f"The {e} is here." for e in ENTITIES) * 20
    prepare_texts([("doc", text)], root / "data", show_progress=False)
    train = {"eval_tokens": 300, "batch_size": 2}
    a_steps, b_steps = ((5, 7.0), (10, 6.5), (15, 6.8)), ((5, 7.0),)
    return {
        "data": root / "data",
        "a": make_run(root, "a", data=root / "data", train=train, checkpoints=a_steps).path,
        "b": make_run(root, "b", data=root / "data", train=train, seed=1, checkpoints=b_steps).path,
    }


@pytest.fixture()
def puzzle_file(tmp_path) -> Path:
    path = tmp_path / "mine.jsonl"
    lines = [
        {"category": "mine", "prompt": "1, 2, 3,", "expected": " 4"},
        {"category": "mine", "prompt": "Copy: tree\nOutput:", "expected": " tree house"},
        {"category": "mine_pairs", "prompt": "Snow is white.", "compare": "Snow is not white."},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_eval_writes_the_promised_json(runs, puzzle_file, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        cli(
            "eval",
            runs["a"],
            "--per-category",
            3,
            "--puzzles",
            puzzle_file,
            "--val",
            "--out",
            out,
            "--device",
            "cpu",
            "--batch-size",
            5,
        )
        == 0
    )
    printed = capsys.readouterr().out
    for text in (
        "Top-1 [95% CI]",
        "preferred [95% CI]",
        "validation loss",
        "scored 27 items",
        "macro",
        "micro",
        "overall accuracy",
        str(out),
    ):
        assert text in printed
    data = json.loads(out.read_text())
    for key in (
        "symbreak_version",
        "run_dir",
        "checkpoint",
        "step",
        "sb_eval",
        "options",
        "validation",
        "timing",
        "categories",
        "overall",
        "items",
        "truncated_items",
    ):
        assert key in data, key
    assert data["step"] == 15 and data["sb_eval"] == "mean"
    assert set(data["categories"]) == {*CATEGORIES, "mine", "mine_pairs"}
    cat = data["categories"]["pattern_numeric"]
    assert cat["kind"] == "completion" and cat["n"] == 3
    assert set(cat["metrics"]) == {"acc", "top1", "top5", "rank", "first_ce", "answer_ce"}
    assert set(cat["metrics"]["top1"]) == {"mean", "lo", "hi", "n"}
    assert set(data["overall"]["acc"]) == {"macro", "micro"}
    assert len(data["items"]) == 27
    mine = [i for i in data["items"] if i["category"] == "mine"]
    assert mine[1]["expected"] == " tree house" and mine[1]["tokens"] == 2
    for item in mine:
        assert item["source"].startswith(str(puzzle_file))
        assert len(item["top5_predictions"]) == 5
        assert {"token", "id", "prob"} <= set(item["top5_predictions"][0])
        assert isinstance(item["top5_predictions"][0]["token"], str)
        assert isinstance(item["top1"], bool) and isinstance(item["rank"], int)
    pair = next(i for i in data["items"] if i["category"] == "mine_pairs")
    assert {"prompt", "compare", "preferred", "ce_prompt", "ce_compare", "ppl_ratio"} <= set(pair)
    # validation loss on the run's own held-out batches (data.source, block_size, eval_tokens)
    model = load_run(runs["a"]).model
    batches = val_batches(load_data(str(runs["data"]), 64, 50304).val, 300, 2)
    assert data["validation"]["val_loss"] == pytest.approx(evaluate_loss(model, batches, "cpu"))
    assert data["validation"]["recorded_val_loss"] == 6.8


def test_eval_default_output_and_checkpoint_choice(runs, puzzle_file):
    args = ("--suite", "none", "--puzzles", puzzle_file, "--device", "cpu")
    name = Path(puzzle_file).stem  # a puzzle file's results are named after it
    assert cli("eval", runs["a"], *args) == 0
    assert json.loads((runs["a"] / "eval" / f"step_00000015.{name}.json").read_text())["step"] == 15
    assert cli("eval", runs["a"], *args, "--checkpoint", "best", "--sb-eval", "zero") == 0
    best = json.loads((runs["a"] / "eval" / f"step_00000010.{name}.json").read_text())
    assert (best["step"], best["sb_eval"]) == (10, "zero")  # lowest recorded val_loss: 6.5
    assert load_run(runs["a"], "5").step == 5
    with pytest.raises(CheckpointError, match="no checkpoint at step 7; it has steps 5, 10, 15"):
        load_run(runs["a"], "7")
    with pytest.raises(CheckpointError, match="not latest, best or a step"):
        load_run(runs["a"], "newest")


def test_user_mistakes_fail_before_loading(runs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"category": "c", "prompt": "x", "expected": " y"}\n{"category": "c"\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON"):
        cli("eval", runs["a"], "--puzzles", bad)
    other = tmp_path / "other.jsonl"
    other.write_text('{"category": "c", "prompt": "x", "compare": "y"}\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"category": "c", "prompt": "x", "expected": " y"}\n')
    with pytest.raises(DataError, match=r"other.jsonl:1 .*holds comparison items here"):
        cli("eval", runs["a"], "--suite", "none", "--puzzles", good, "--puzzles", other)
    clash = tmp_path / "clash.jsonl"
    clash.write_text('{"category": "copy", "prompt": "x", "expected": " y"}\n')
    with pytest.raises(DataError, match="'copy' is also a category of the suite"):
        cli("eval", runs["a"], "--puzzles", clash)
    with pytest.raises(SymbreakError, match="nothing to evaluate"):
        cli("eval", runs["a"], "--suite", "none")
    with pytest.raises(CheckpointError, match="not a run directory"):
        cli("eval", tmp_path, "--suite", "none", "--val")


def test_reasoning_gym_suite_scores_seeded_items(runs, tmp_path, capsys):
    import reasoning_gym

    out = tmp_path / "rg.json"
    suite = "reasoning-gym:syllogism,knights_knaves"
    args = ("--suite", suite, "--per-category", 3, "--suite-seed", 7, "--device", "cpu")
    assert cli("eval", runs["a"], *args, "--out", out) == 0
    assert "scored 6 items" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert set(data["categories"]) == {"syllogism", "knights_knaves"}
    assert data["options"]["suite"] == suite
    assert data["options"]["suite_version"] == "reasoning-gym==0.1.25"
    # the items are reasoning-gym's own, rebuilt with its API and the same seed
    expected = list(reasoning_gym.create_dataset("knights_knaves", seed=7, size=3))
    got = [i for i in data["items"] if i["category"] == "knights_knaves"]
    assert [i["expected"] for i in got] == [" " + e["answer"] for e in expected]
    assert [i["prompt"] for i in got] == [e["question"].rstrip() + "\nAnswer:" for e in expected]
    # knights-and-knaves questions are longer than the 64-token context: truncated, and said so
    assert all(i["truncated"] > 0 for i in got) and data["truncated_items"] >= 3
    assert all(i["tokens"] > 1 for i in got)  # a multi-token answer, teacher-forced


def test_reasoning_gym_mistakes_are_one_line(runs, monkeypatch):
    with pytest.raises(SymbreakError, match="unknown task 'sylogism'"):
        cli("eval", runs["a"], "--suite", "reasoning-gym:sylogism")
    with pytest.raises(SymbreakError, match="'propositional_logic' has no reference answer"):
        cli("eval", runs["a"], "--suite", "reasoning-gym:propositional_logic")
    with pytest.raises(SystemExit):  # argparse: empty task list
        cli("eval", runs["a"], "--suite", "reasoning-gym:")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "reasoning_gym" else real(n, *a)
    )
    with pytest.raises(SymbreakError, match=r"pip install 'symbreak\[reasoning-gym\]'"):
        cli("eval", runs["a"], "--suite", "reasoning-gym:syllogism")


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_loading_is_strict(runs, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["b"], run_dir)
    path = run_dir / "checkpoints" / "step_00000005" / "model.safetensors"
    tensors = load_file(path)
    if damage == "missing":
        del tensors["blocks.0.mlp.c_fc.weight"]
    elif damage == "extra":
        tensors["blocks.0.attn.rotation"] = torch.zeros(3)
    else:
        tensors["ln_f.weight"] = torch.ones(31)
    save_file(tensors, path)
    expected = {"missing": "missing", "extra": "unexpected", "shape": "shape of ln_f.weight"}
    with pytest.raises(CheckpointError, match=expected[damage]):
        load_run(run_dir)
    with pytest.raises(CheckpointError):
        cli("eval", run_dir, "--per-category", 1)


def test_config_must_match_the_checkpoint(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["b"], run_dir)
    toml = run_dir / "config.toml"
    toml.write_text(toml.read_text().replace("n_embd = 32", "n_embd = 64"))
    with pytest.raises(CheckpointError, match=r"model.n_embd=64 .* 32"):
        load_run(run_dir)


def test_compare_writes_table_json_and_png(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "cmp" / "ab.json"
    assert (
        cli("compare", runs["a"], runs["b"], "--per-category", 3, "--out", out, "--device", "cpu")
        == 0
    )
    printed = capsys.readouterr().out
    assert "b - a [95% CI]" in printed and "paired bootstrap" in printed
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.read_text())
    assert data["chart"] == png.name  # relative to the JSON beside it
    assert [r["name"] for r in data["runs"]] == ["a", "b"]
    m = data["categories"]["copy"]["metrics"]["top1"]
    assert len(m["runs"]) == 2 and len(m["diff_vs_first"]) == 1
    assert {"mean", "lo", "hi", "excludes_zero"} <= set(m["diff_vs_first"][0])
    assert set(data["overall"]["acc"]) == {"macro", "micro"}
    with pytest.raises(SymbreakError, match="at least two"):
        cli("compare", runs["a"], "--no-plot")


@pytest.mark.slow
def test_matplotlib_is_imported_only_to_draw():
    code = (
        "import sys, symbreak.cli, symbreak.eval.evaluate; symbreak.cli.build_parser(); "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def test_sample_is_deterministic_for_a_seed(runs, capsys):
    argv = (
        "sample",
        runs["a"],
        "--prompt",
        "The key",
        "--max-new-tokens",
        12,
        "--seed",
        3,
        "--device",
        "cpu",
    )
    assert cli(*argv) == 0
    first = capsys.readouterr().out
    assert cli(*argv) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("The key")


class Favours(nn.Module):
    """Logits: +50 on the padding id 50300, +5 on ``token``, 0 elsewhere; records lengths."""

    def __init__(self, token: int) -> None:
        super().__init__()
        self.token, self.widths = token, []

    def forward(self, idx: torch.Tensor):
        self.widths.append(idx.shape[1])
        out = torch.zeros(*idx.shape, 50304)
        out[..., 50300] = 50.0
        out[..., self.token] = 5.0
        return out, None


def test_generate_never_emits_padding_ids_and_crops_the_context():
    model = Favours(token=11)
    s = generate(model, "Hello there", max_new_tokens=20, temperature=0, block_size=5)
    assert s.new_ids == [11] * 20 and not s.stopped_at_eot
    assert max(model.widths) == 5
    for seed in range(3):
        s = generate(
            Favours(11), "", max_new_tokens=30, temperature=2.0, top_k=None, seed=seed, block_size=8
        )
        assert all(i < GPT2_VOCAB_SIZE for i in s.new_ids)
    a = generate(
        Favours(11), "x", max_new_tokens=30, temperature=5.0, top_k=None, seed=1, block_size=8
    )
    b = generate(
        Favours(11), "x", max_new_tokens=30, temperature=5.0, top_k=None, seed=1, block_size=8
    )
    assert a.new_ids == b.new_ids


def test_generate_stops_at_end_of_text():
    s = generate(Favours(EOT_ID), "Hello", max_new_tokens=10, temperature=0, block_size=8)
    assert s.new_ids == [] and s.stopped_at_eot
    with pytest.raises(SymbreakError, match="temperature"):
        generate(Favours(11), "x", temperature=-1.0, block_size=8)


# --------------------------------------------------------------------------------------------
# Output paths: outputs never overwrite each other; a directory means "inside it"
# --------------------------------------------------------------------------------------------


def test_compare_defaults_next_to_the_runs_not_the_current_directory(
    runs, puzzle_file, tmp_path, monkeypatch
):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    few = ("--suite", "none", "--puzzles", puzzle_file)
    assert cli("compare", runs["a"], runs["b"], *few, "--device", "cpu") == 0
    (tmp_path / "mine.jsonl").unlink()  # the puzzle file lives here too
    assert list(tmp_path.iterdir()) == []
    out = runs["a"].parent / "compare-a-vs-b"
    assert json.loads((out / "compare.json").read_text())["chart"] == "compare.png"
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_out_named_like_the_chart_keeps_both_outputs(runs, puzzle_file, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "chart.png"
    few = ("--suite", "none", "--puzzles", puzzle_file)
    assert cli("compare", runs["a"], runs["b"], *few, "--out", png) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(png.with_suffix(".json").read_text())["chart"] == png.name
    out = tmp_path / "named"  # a plain name is a directory, created
    assert cli("compare", runs["a"], runs["b"], *few, "--out", out, "--no-plot") == 0
    assert json.loads((out / "compare.json").read_text())["chart"] is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(SymbreakError, match=r"--out: .* is a file"):
        cli("compare", runs["a"], runs["b"], "--out", tmp_path / "file", "--no-plot")


def test_eval_out_directory_writes_inside_and_a_file_in_the_way_fails_first(runs, tmp_path):
    assert cli("eval", runs["a"], "--suite", "none", "--val", "--out", tmp_path) == 0
    assert json.loads((tmp_path / "step_00000015.val.json").read_text())["step"] == 15
    (tmp_path / "f").write_text("x")
    with pytest.raises(SymbreakError, match=r"--out: cannot write .* is a file"):
        cli("eval", runs["a"], "--suite", "none", "--val", "--out", tmp_path / "f" / "x.json")


def test_bench_profile_directory_means_a_trace_inside(tmp_path):
    from symbreak.outputs import output_file

    assert output_file(tmp_path, "trace.json", "--profile") == tmp_path / "trace.json"
    assert output_file(tmp_path / "t.json", "trace.json", "--profile") == tmp_path / "t.json"


def test_each_suite_has_its_own_default_file_and_report_reads_only_the_builtin_one(
    tmp_path, make_run
):
    from symbreak.eval.evaluate import default_eval_name, evaluate_run
    from symbreak.experiments.collect import _eval_figures

    assert default_eval_name("step_00000003", "builtin", []) == "step_00000003.json"
    assert (
        default_eval_name("step_00000003", "reasoning-gym:syllogism,knights", [])
        == "step_00000003.reasoning-gym-syllogism-knights.json"
    )
    assert default_eval_name("step_00000003", "none", ["a/mine.jsonl"]) == "step_00000003.mine.json"
    run = make_run(tmp_path, "r").path
    mine = tmp_path / "mine.jsonl"
    mine.write_text(
        '{"category": "copy", "prompt": "a b c a b c a b", "expected": " c"}\n'
        '{"category": "copy", "prompt": "x y x y x", "expected": " y"}\n'
    )
    result = evaluate_run(run, suite="none", puzzles=[mine])
    assert result.path == run / "eval" / "step_00000003.mine.json"
    assert not (run / "eval" / "step_00000003.json").exists()  # the built-in file is untouched
    assert _eval_figures(result.data) is None  # never a "puzzle macro acc" of another suite
