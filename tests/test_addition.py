"""data.source=addition (the generator and its splits) and ``eval --task addition``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from symbreak.cli import main
from symbreak.data import load_config, load_data
from symbreak.data.addition import (
    LINE,
    AdditionSpec,
    cached_addition,
    decode_chars,
    encode_chars,
    encode_problems,
    line_text,
    split_problems,
)
from symbreak.errors import ConfigError
from symbreak.eval.addition import evaluate_addition

SPEC = AdditionSpec(n_train=3000, n_val=500, reverse=False, seed=3)


def test_lines_are_correct_sums_in_the_documented_format() -> None:
    assert line_text(42, 917) == "042+917=0959\n"
    assert line_text(42, 917, reverse=True) == "042+917=9590\n"
    assert line_text(999, 999) == "999+999=1998\n"
    for reverse in (False, True):
        splits = split_problems(AdditionSpec(200, 50, reverse, 0))
        text = decode_chars(encode_problems(splits["train"], reverse))
        lines = text.split("\n")[:-1]
        assert len(lines) == 200 and all(len(line) == LINE - 1 for line in lines)
        for line, (a, b) in zip(lines, splits["train"].tolist(), strict=True):
            lhs, c = line.split("=")
            x, y = lhs.split("+")
            assert (int(x), int(y)) == (a, b)
            assert int(c[::-1] if reverse else c) == a + b  # the answer is the sum
    assert encode_chars("12+3=\n") == [1, 2, 10, 3, 11, 12]


def test_splits_are_disjoint_even_when_commuted_and_deterministic() -> None:
    s = split_problems(SPEC)
    assert len(s["train"]) == 3000 and len(s["val"]) == 500
    train = {tuple(p) for p in s["train"].tolist()}
    val = {tuple(p) for p in s["val"].tolist()}
    assert len(train) == 3000 and len(val) == 500  # no duplicates
    assert not train & val
    assert not {(b, a) for a, b in train} & val  # nor a commuted twin
    again = split_problems(SPEC)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = split_problems(AdditionSpec(3000, 500, False, seed=4))
    assert not np.array_equal(s["val"], other["val"])


def test_cached_dataset_loads_as_windows(tmp_path: Path) -> None:
    d = cached_addition(SPEC, tmp_path)
    assert cached_addition(SPEC, tmp_path) == d  # generated once
    meta = json.loads((d / "meta.json").read_text())
    assert meta["problems"] == {"val": 500, "train": 3000} and meta["chars"] == "0123456789+=\n"
    data = load_data("addition", 26, 16, tmp_path, addition=SPEC)
    w = data.train.get([0, 1])
    text = decode_chars(w[0].tolist())
    assert text[:13] == line_text(*split_problems(SPEC)["train"][0].tolist())
    assert len(data.val) == (500 * 13 - 1) // 26  # windows of 27 tokens, stride 26


def test_config_checks_the_vocabulary() -> None:
    with pytest.raises(ConfigError, match=r"model\.vocab_size"):
        load_config(None, ["data.source=addition", "model.vocab_size=12"])
    with pytest.raises(ConfigError, match=r"data\.addition_train"):
        load_config(None, ["data.source=addition", "data.addition_train=999000"])
    cfg = load_config(None, ["data.source=addition", "model.vocab_size=16"])
    assert (cfg.data.addition_train, cfg.data.addition_val) == (100000, 2000)


class Oracle(torch.nn.Module):
    """Reads the operands from the prompt and answers correctly (wrong 'thousands' if asked)."""

    def __init__(self, reverse: bool, break_thousands: bool = False, bos: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.reverse, self.break_thousands, self.bos = reverse, break_thousands, bos

    def hidden(self, x: torch.Tensor) -> torch.Tensor:  # every position "holds" the prefix
        return x[:, None, :].expand(-1, x.shape[1], -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(B, T, 16) logits; only the last position's are meaningful (all greedy reads)."""
        last = self.output(self.hidden(x)[:, -1])
        return last[:, None, :].expand(-1, x.shape[1], -1), None

    def output(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 16)
        for r, row in enumerate(x.tolist()):
            s = decode_chars(row)[1:] if self.bos else decode_chars(row)
            a, b = int(s[0:3]), int(s[4:7])
            c = f"{a + b:04d}"
            if self.break_thousands:
                c = str((int(c[0]) + 1) % 10) + c[1:]
            c = c[::-1] if self.reverse else c
            out[r, int(c[len(s) - 8])] = 1.0
        return out


@pytest.mark.parametrize("reverse", [False, True])
def test_eval_scores_an_oracle_and_a_wrong_thousands_digit(reverse: bool) -> None:
    cfg = load_config(None, ["data.source=addition", "model.vocab_size=16",
                             "data.addition_train=100", "data.addition_val=40",
                             f"data.addition_reverse={str(reverse).lower()}"])  # fmt: skip
    r = evaluate_addition(Oracle(reverse), cfg)
    assert r["problems"] == 40 and r["exact_match"]["mean"] == 1.0
    assert 0.9 < r["exact_match"]["lo"] < 1.0 and r["exact_match"]["hi"] == pytest.approx(1.0)
    r = evaluate_addition(Oracle(reverse, break_thousands=True), cfg, n_problems=20)
    assert r["exact_match"]["mean"] == 0.0 and r["problems"] == 20
    assert r["per_digit"]["thousands"]["mean"] == 0.0
    assert r["per_digit"]["units"]["mean"] == r["per_digit"]["hundreds"]["mean"] == 1.0


def test_eval_cli_on_an_addition_run(tmp_path: Path, capsys, make_run) -> None:
    data = {"source": "addition", "addition_train": 100, "addition_val": 30,
            "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    model = {"n_embd": 16, "block_size": 26, "vocab_size": 16}
    run = make_run(tmp_path, "add", model=model, sb={}, data=data, checkpoints=((1, None),)).path
    assert main(["eval", str(run), "--task", "addition", "--problems", "10"]) == 0
    outdir = tmp_path / "out"
    outdir.mkdir()  # an existing directory: the checkpoint's file name inside it
    assert main(["eval", str(run), "--task", "addition", "--problems", "5", "--out",
                 str(outdir)]) == 0  # fmt: skip
    assert (outdir / "addition_step_00000001.json").is_file()
    out = capsys.readouterr().out
    assert "exact match" in out and "thousands" in out
    data = json.loads((run / "eval" / "addition_step_00000001.json").read_text())
    assert data["problems"] == 10 and set(data["per_digit"]) == {
        "units", "tens", "hundreds", "thousands"}  # fmt: skip
    assert main(["eval", str(run), "--task", "addition", "--problems", "31"]) == 2
    assert "more than the run's 30" in capsys.readouterr().err
    for argv in (["eval", str(run)], ["sample", str(run), "--prompt", "12+"]):
        assert main(argv) == 2
        assert "--task addition" in capsys.readouterr().err
    assert main(["eval", str(run), "--suite", "none", "--val"]) == 0  # val loss works


def test_training_on_addition_with_the_new_switches(tmp_path: Path) -> None:
    """The trainer end to end: addition data, bidirectional mask, RoPE, no MLP residual."""
    import math

    from symbreak.train.trainer import train

    cfg = load_config(None, ["data.source=addition", "data.addition_train=400",
                             "data.addition_val=100", f"data.cache_dir={tmp_path / 'c'}",
                             "model.vocab_size=16", "model.block_size=26", "model.n_layer=1",
                             "model.n_head=2", "model.n_embd=16", "model.pos_encoding=rope",
                             "model.mask=bidirectional", "model.residual=attn", "sb.q=true",
                             "train.max_steps=3", "train.batch_size=4", "train.eval_tokens=260",
                             "train.progress=false", f"train.out_dir={tmp_path}",
                             "train.name=r", "optim.lr=1e-2"])  # fmt: skip
    summary = train(cfg)
    assert summary.steps == 3 and math.isfinite(summary.final_val_loss)
    assert summary.final_val_loss < summary.initial_val_loss + 0.5


def test_addition_runs_log_exact_match_and_the_report_reads_it(tmp_path: Path, capsys) -> None:
    """Two tiny addition runs (learned+causal, NoPE+bidirectional): metrics.csv carries
    exact_match at every evaluation, and `report --task addition` tabulates it with the probes,
    whose permutation test is exactly invariant for NoPE+bidirectional only."""
    from symbreak.experiments.addition_report import median_steps, steps_to
    from symbreak.experiments.training import train_run as train
    from symbreak.train.metrics import read_metrics

    common = ["data.source=addition", "data.addition_train=300", "data.addition_val=100",
              f"data.cache_dir={tmp_path / 'c'}", "model.block_size=13", "model.n_layer=2",
              "model.n_head=2", "model.n_embd=16", "train.max_steps=4", "train.eval_every=2",
              "train.batch_size=4", "train.eval_tokens=130", "train.progress=false",
              f"train.out_dir={tmp_path / 'runs'}", "optim.lr=1e-2"]  # fmt: skip
    for name, pe, mask in (("a", "learned", "causal"), ("b", "none", "bidirectional")):
        train(load_config(None, [*common, f"train.name={name}", f"model.pos_encoding={pe}",
                                 f"model.mask={mask}"]))  # fmt: skip
        rows = [r for r in read_metrics(tmp_path / "runs" / name / "metrics.csv") if r["val_loss"]]
        assert [r["step"] for r in rows] == ["0", "2", "4"]
        assert all(0.0 <= float(r["exact_match"]) <= 1.0 for r in rows)
    out = tmp_path / "rep"
    args = ["report", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b")]
    assert main([*args, "--task", "addition", "--out", str(out), "--threshold", "0.5"]) == 0
    assert "steps to 50%" in capsys.readouterr().out
    data = json.loads((out / "report.json").read_text())
    cells = {(c["pos_encoding"], c["mask"]): c for c in data["cells"]}
    assert set(cells) == {("learned", "causal"), ("none", "bidirectional")}
    assert cells[("none", "bidirectional")]["probes"]["perm_rel_change"] < 1e-10
    assert cells[("learned", "causal")]["probes"]["perm_rel_change"] > 1e-6
    assert len(cells[("learned", "causal")]["probes"]["r2_by_layer"]) == 3  # embedding + 2 blocks
    assert (out / "report.md").is_file() and (out / "exact_match.png").is_file()
    assert main([*args, "--task", "addition", "--metric", "best_val_loss"]) == 2
    # the helpers behind "steps to threshold"
    assert steps_to([0, 100, 200], [0.1, 0.95, 0.9], 0.9) == 100
    assert steps_to([0, 100], [0.1, 0.5], 0.9) is None
    assert median_steps([100, None, 300]) == 300 and median_steps([100, None, None]) is None


def test_a_leading_newline_variant_moves_the_answer_one_place(tmp_path: Path) -> None:
    """data.addition_bos: lines are "\\naaa+bbb=cccc"; the answer positions, the eval prompt
    and the cache key follow, and the default format is unchanged."""
    from symbreak.data import addition_spec, run_loss_positions
    probs = np.array([[42, 917]])
    assert decode_chars(encode_problems(probs, False)) == "042+917=0959\n"
    assert decode_chars(encode_problems(probs, False, bos=True)) == "\n042+917=0959"
    base = ["data.source=addition", "model.block_size=13", "model.mask=bidirectional",
            "data.addition_train=100", "data.addition_val=40"]  # fmt: skip
    plain, bos = (load_config(None, [*base, f"data.addition_bos={b}"]) for b in ("false", "true"))
    assert addition_spec(plain.data).key != addition_spec(bos.data).key
    assert run_loss_positions(plain).nonzero().flatten().tolist() == [7, 8, 9, 10]
    assert run_loss_positions(bos).nonzero().flatten().tolist() == [8, 9, 10, 11]
    data = load_data("addition", 13, 16, tmp_path, addition=addition_spec(bos.data))
    first = decode_chars(data.train.get([0])[0].tolist())
    assert first[0] == "\n" and first[4] == "+" and first[8] == "="  # windows start at "\n"
    r = evaluate_addition(Oracle(False, bos=True), bos)
    assert r["exact_match"]["mean"] == 1.0
