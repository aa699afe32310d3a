"""Chain-of-thought arithmetic: the generator, the loss mask, scoring, the paired statistics,
fine-tuning and its bad input."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

from symbreak import cli
from symbreak.data import load_config
from symbreak.data.cot import (
    KINDS,
    CotSpec,
    PackedExamples,
    PackedWindows,
    answer_complete,
    encode_items,
    extract_answer,
    generate_split,
    in_test_pool,
    masked_pairs,
    pack_order,
    task_characters,
)
from symbreak.data.tokenizer import CharTokenizer
from symbreak.errors import SymbreakError
from symbreak.eval.cot import compare_cot, evaluate_cot
from symbreak.experiments.finetune import finetune_config
from symbreak.model import GPT
from symbreak.stats import mcnemar_exact, paired_bootstrap_diff
from symbreak.targets import IGNORE_INDEX

CHAR = CharTokenizer(task_characters())

# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def test_generation_is_deterministic_in_the_seed():
    spec = CotSpec(n_train=300, n_test=100, seed=3)
    assert generate_split(spec, "train") == generate_split(spec, "train")
    assert generate_split(spec, "test") == generate_split(spec, "test")
    other = generate_split(CotSpec(n_train=300, n_test=100, seed=4), "train")
    assert other != generate_split(spec, "train")


def test_train_and_test_are_disjoint_and_keep_the_mix():
    spec = CotSpec(n_train=4000, n_test=800, mix=(1.0, 2.0, 1.0, 0.0))
    train, test = generate_split(spec, "train"), generate_split(spec, "test")
    assert len(train) == 4000 and len(test) == 800
    assert {i.canonical for i in train}.isdisjoint({i.canonical for i in test})
    assert {i.prompt for i in train}.isdisjoint({i.prompt for i in test})
    assert all(in_test_pool(i.canonical) for i in test)
    assert not any(in_test_pool(i.canonical) for i in train)
    assert len({i.canonical for i in test}) == len(test)  # test problems are distinct
    counts = {k: sum(i.kind == k for i in test) for k in KINDS}
    assert counts == {"T1": 200, "T2": 400, "T3": 200, "T4": 0}
    assert [i.kind for i in test[:3]] == ["T1", "T2", "T3"]  # interleaved: prefixes keep the mix


def _solve(prompt: str) -> int:
    """The answer worked out from the prompt's words alone, independently of the generator."""
    if m := re.fullmatch(r"Q: What is (\d+) ([-+*]) (\d+)\?\n", prompt):
        a, op, b = int(m[1]), m[2], int(m[3])
        return a + b if op == "+" else a - b if op == "-" else a * b
    if m := re.fullmatch(r"Q: Start with (\d+)\. (.+)\. What is the result\?\n", prompt):
        x = int(m[1])
        for step in re.split(r", (?:then )?", m[2]):
            word, k = step.lower().rsplit(" ", 1)
            x = {"add": x + int(k), "subtract": x - int(k), "multiply by": x * int(k)}[word]
        return x
    n = [int(v) for v in re.findall(r"\d+", prompt)]
    if "buys" in prompt and "more, then gives" in prompt:
        return n[0] + n[1] - n[2]
    if "boxes with" in prompt:
        return n[0] * n[1] - n[2]
    if "share all of them equally" in prompt:
        assert (n[0] + n[1]) % n[2] == 0
        return (n[0] + n[1]) // n[2]
    if "packs of" in prompt:
        return n[0] * n[1] - n[2] + n[3]
    raise AssertionError(f"unknown template: {prompt!r}")


def test_every_answer_and_every_chain_line_is_right():
    items = generate_split(CotSpec(n_train=2000, n_test=400), "train")
    items += generate_split(CotSpec(n_train=2000, n_test=400), "test")
    for item in items:
        assert item.answer == _solve(item.prompt), item.text
        assert extract_answer(item.completion) == item.answer
        for line in item.chain.splitlines():
            if m := re.fullmatch(r"(-?\d+) ([-+*/]) (\d+) = (-?\d+)", line):
                a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
                want = {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a / b
                assert want == c, line
        assert set(item.text) <= set(task_characters())
    assert {i.kind for i in items} == set(KINDS)


def test_answer_extraction():
    assert extract_answer("12 + 30 = 42\nAnswer: 42\n") == 42
    assert extract_answer("Answer: 42 apples, I think\nAnswer: 7\n") == 42
    assert extract_answer("5 - 9 = -4\nAnswer: -4") == -4
    assert extract_answer("5 - 9 = -4\nno answer line") is None
    assert extract_answer("the Answer: 3") is None  # only at the start of a line
    assert extract_answer("Answer: none\n") is None
    assert not answer_complete("1 + 1 = 2\nAnswer: 2")
    assert answer_complete("1 + 1 = 2\nAnswer: 2\n")


# --------------------------------------------------------------------------------------------
# The loss mask
# --------------------------------------------------------------------------------------------


def _packed(n: int = 12, block: int = 400) -> tuple[PackedWindows, list]:
    items = generate_split(CotSpec(n_train=n, n_test=4), "train")
    enc = encode_items(items, CHAR)
    return PackedWindows(enc, pack_order(enc.lengths, np.arange(n), block + 1), block, 0), items


def test_targets_are_exactly_the_chain_and_answer_tokens():
    windows, items = _packed()
    idx = np.arange(len(windows))
    _, y = masked_pairs(windows, idx)
    assert int((y != IGNORE_INDEX).sum()) == sum(len(i.completion) for i in items)
    targets = "".join(CHAR.decode(row[row != IGNORE_INDEX].tolist()) for row in y)
    assert targets == "".join(i.completion for i in items)
    # changing the prompt tokens as targets changes nothing: they are never read
    tokens = windows.tokens.copy()
    windows.tokens[:, 1:][~windows.targets[:, 1:]] = 7
    _, y2 = masked_pairs(windows, idx)
    windows.tokens = tokens
    assert torch.equal(y, y2)


def test_prompt_targets_never_count_and_every_chain_target_does():
    windows, _ = _packed(n=3, block=400)
    x, y = masked_pairs(windows, np.arange(len(windows)))
    cfg = load_config(
        overrides=[f"model.vocab_size={CHAR.vocab_size}", "model.n_layer=1", "model.n_embd=16",
                   "model.n_head=2", "model.block_size=400"]
    )
    torch.manual_seed(0)
    model = GPT(cfg.model, cfg.sb).double().eval()  # float64: one target moves the mean by ~1e-7
    with torch.no_grad():
        base = model(x, y)[1]
        hidden = model.hidden(x)
        logp = torch.log_softmax(model.output(hidden), -1)
    keep = y != IGNORE_INDEX
    manual = -logp[keep].gather(1, y[keep][:, None]).mean()
    torch.testing.assert_close(base, manual, rtol=1e-10, atol=1e-10)  # only the targets count
    rows, cols = torch.nonzero(keep, as_tuple=True)
    for r, c in list(zip(rows.tolist(), cols.tolist(), strict=True))[::40]:
        y2 = y.clone()
        y2[r, c] = (y[r, c] + 1) % CHAR.vocab_size
        with torch.no_grad():
            assert not torch.equal(model(x, y2)[1], base), (r, c)


def test_epochs_visit_every_example_once_in_a_new_order():
    items = generate_split(CotSpec(n_train=50, n_test=4), "train")
    enc = encode_items(items, CHAR)
    data = PackedExamples(enc, 511, 0, seed=1)
    n0 = data.windows_in(0)
    _, y = data.samples(np.arange(n0))
    text = "".join(CHAR.decode(r[r != IGNORE_INDEX].tolist()) for r in y)
    got = re.findall(r".*?Answer: -?\d+\n", text, re.S)
    assert sorted(got) == sorted(i.completion for i in items)
    assert not np.array_equal(data.order(0), data.order(1))


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


class Stub(nn.Module):
    """A 'model' that writes a fixed continuation of each prompt: the reference chain, with
    the answer shifted by ``offset``."""

    def __init__(self, items, offset: int, block: int = 512):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.cfg = type("C", (), {"block_size": block, "vocab_size": CHAR.vocab_size})()
        self.full = [
            CHAR.encode(i.prompt + i.chain + f"Answer: {i.answer + offset}\n") for i in items
        ]
        self.x = CHAR.encode("x")[0]

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*idx.shape, CHAR.vocab_size)
        out[..., self.x] = 10.0
        for b, row in enumerate(idx.tolist()):
            best, best_len = None, 5  # the item whose text the row follows furthest
            for full in self.full:
                same = 0
                while same < min(len(row), len(full)) and row[same] == full[same]:
                    same += 1
                if same > best_len:
                    best, best_len = full, same
            if best is not None:
                n = min(best_len, len(best) - 1)
                out[b, :n] = 0.0
                out[b, torch.arange(n), torch.tensor(best[1 : n + 1])] = 10.0
        return out

    def output(self, h: torch.Tensor) -> torch.Tensor:
        return h


def test_a_model_writing_the_right_chain_scores_100_percent_and_a_wrong_one_0():
    cfg = load_config(overrides=["data.source=cot-arithmetic", "data.cot_test=12",
                                 f"model.vocab_size={CHAR.vocab_size}", "data.cot_vocab=x"])
    items = generate_split(CotSpec(n_test=12), "test")
    right = evaluate_cot(Stub(items, 0), cfg, CHAR, batch_size=5)
    assert right["accuracy"]["overall"]["mean"] == 1.0
    assert all(right["accuracy"][k]["mean"] == 1.0 for k in KINDS)
    assert [r["generated"] for r in right["items"]] == [i.completion for i in items]
    wrong = evaluate_cot(Stub(items, 1), cfg, CHAR, batch_size=5)
    assert wrong["accuracy"]["overall"]["mean"] == 0.0
    assert [r["answer"] for r in wrong["items"]] == [i.answer + 1 for i in items]
    lo, hi = right["accuracy"]["overall"]["lo"], right["accuracy"]["overall"]["hi"]
    assert 0.7 < lo < 1.0 and hi == 1.0  # Wilson at 12/12
    # the right chain is the stub's own: its teacher-forced log-probability is near 0
    assert right["chain_logprob"]["overall"]["mean"] > wrong["chain_logprob"]["overall"]["mean"]
    table = compare_cot(wrong, right)
    assert table["overall"]["accuracy_diff"]["mean"] == 1.0
    assert table["overall"]["mcnemar"]["only_a"] == 12  # b's (right's) wins


def test_a_missing_answer_line_is_wrong():
    cfg = load_config(overrides=["data.source=cot-arithmetic", "data.cot_test=4",
                                 f"model.vocab_size={CHAR.vocab_size}", "data.cot_vocab=x"])
    stub = Stub([], 0)  # writes 'x' forever: no answer line, stops at the length limit
    res = evaluate_cot(stub, cfg, CHAR, max_new=20)
    assert res["accuracy"]["overall"]["mean"] == 0.0
    assert all(r["answer"] is None and len(r["generated"]) == 20 for r in res["items"])


# --------------------------------------------------------------------------------------------
# Paired statistics
# --------------------------------------------------------------------------------------------


def test_mcnemar_matches_scipy_and_the_binomial_by_hand():
    a = np.array([1] * 50 + [1] * 3 + [0] * 9 + [0] * 38, dtype=bool)
    b = np.array([1] * 50 + [0] * 3 + [1] * 9 + [0] * 38, dtype=bool)
    r = mcnemar_exact(a, b)
    assert (r["only_a"], r["only_b"], r["discordant"]) == (3, 9, 12)
    by_hand = 2 * sum(math.comb(12, k) for k in range(4)) / 2**12  # 598 / 4096
    assert r["p"] == pytest.approx(by_hand, rel=1e-12)
    assert r["p"] == pytest.approx(sps.binomtest(3, 12, 0.5).pvalue, rel=1e-12)
    assert mcnemar_exact(a, a)["p"] == 1.0


def test_paired_bootstrap_matches_the_mean_difference_and_scipy():
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.6
    b = a.copy()
    b[rng.choice(300, 40, replace=False)] ^= True
    est = paired_bootstrap_diff(a, b, resamples=20000)
    assert est.mean == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    d = a.astype(float) - b.astype(float)
    ref = sps.bootstrap((d,), np.mean, n_resamples=20000, method="percentile",
                        random_state=1).confidence_interval
    assert est.lo == pytest.approx(ref.low, abs=0.006)
    assert est.hi == pytest.approx(ref.high, abs=0.006)


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------

FT = ["train.batch_size=4", "data.cot_test=8", "train.eval_tokens=512", "optim.lr=2e-3",
      "train.progress=false", "train.log_every=1"]


def _source(make_run, root: Path, name: str = "src", block: int = 128, **kw):
    return make_run(root, name, model={"block_size": block}, train={"max_steps": 3}, **kw).path


@pytest.mark.slow
def test_finetuning_a_tiny_run_lowers_its_task_loss(tmp_path, make_run):
    from symbreak.experiments.finetune import finetune_run
    from symbreak.train.metrics import read_metrics

    src = _source(make_run, tmp_path)
    cfg = finetune_config(src, examples=32, epochs=2, out=tmp_path / "ft", overrides=FT)
    assert cfg.model.init_from == str(src.resolve()) and cfg.sb.q and cfg.sb.v
    summary = finetune_run(cfg)
    assert summary.steps == cfg.train.max_steps > 0
    rows = [r for r in read_metrics(tmp_path / "ft" / "metrics.csv") if r["val_loss"]]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"]) - 0.5


@pytest.mark.slow
def test_sigkill_then_resume_of_a_finetuning_run_is_bit_exact(tmp_path, make_run):
    from test_resume import _wait_for, assert_same_run

    src = _source(make_run, tmp_path)
    extra = [*FT, "train.checkpoint_every=3"]

    def cmd(name: str) -> list[str]:
        return [sys.executable, "-m", "symbreak", "finetune", str(src), "--examples", "48",
                "--epochs", "1", "--out", str(tmp_path / name), *extra]

    subprocess.run(cmd("full"), check=True, capture_output=True)
    proc = subprocess.Popen(cmd("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(tmp_path / "killed" / "checkpoints" / "step_00000003" / "state.json", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd("killed"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed at step" in done.stdout
    assert_same_run(tmp_path / "full", tmp_path / "killed")


# --------------------------------------------------------------------------------------------
# Bad input: one line each
# --------------------------------------------------------------------------------------------


def _one_line(argv: list[str], capsys) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_finetuning_input_is_one_line_each(tmp_path, make_run, capsys):
    src = _source(make_run, tmp_path)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["finetune", str(src), "--task", "poetry"])
    assert "invalid choice: 'poetry'" in capsys.readouterr().err
    with pytest.raises(SymbreakError, match="not a fine-tuning task"):
        finetune_config(src, task="poetry")
    assert "does not exist" in _one_line(["finetune", str(tmp_path / "nope")], capsys)
    unfinished = make_run(tmp_path, "half", model={"block_size": 128}).path  # step 3 of 1000
    assert "unfinished (checkpoint at step 3 of 1000)" in _one_line(
        ["finetune", str(unfinished)], capsys
    )
    assert "--epochs must be at least 1" in _one_line(
        ["finetune", str(src), "--epochs", "0"], capsys
    )
    assert "fewer than one batch (train.batch_size=16)" in _one_line(
        ["finetune", str(src), "--examples", "8"], capsys
    )


def test_a_char_run_missing_task_characters_is_named_in_one_line(tmp_path, make_run, capsys):
    text = tmp_path / "t.txt"
    text.write_text("hello world, what is 12? Answer: yes.\n" * 50)
    data = tmp_path / "chars"
    assert cli.main(["prepare", str(text), "--out", str(data), "--tokenizer", "char"]) == 0
    capsys.readouterr()
    src = _source(make_run, tmp_path, data=data)
    err = _one_line(["finetune", str(src)], capsys)
    assert "character vocabulary lacks" in err and "'+'" in err and "'*'" in err
    # a character-level run that holds every character fine-tunes
    text.write_text(task_characters() * 40)
    full = tmp_path / "full"
    assert cli.main(["prepare", str(text), "--out", str(full), "--tokenizer", "char"]) == 0
    ok = _source(make_run, tmp_path, "ok", block=512, data=full)
    cfg = finetune_config(ok, examples=16, overrides=["train.batch_size=4"])
    assert cfg.data.cot_vocab == str(full) and cfg.model.vocab_size == len(task_characters()) + 1


@pytest.mark.slow
def test_sweep_finetune_then_report_pairs_by_pretraining_seed(tmp_path, corpus_cache):
    import json

    grid = tmp_path / "g.toml"
    grid.write_text(
        f'name = "pre"\nout_dir = "{tmp_path}"\n[config]\n"model.n_layer" = 1\n'
        '"model.n_embd" = 32\n"model.n_head" = 2\n"model.block_size" = 128\n'
        '"train.max_steps" = 2\n"train.batch_size" = 2\n"train.eval_tokens" = 256\n'
        f'"data.cache_dir" = "{corpus_cache}"\n'
        '[axes.sb]\nsym = {}\nbQ = { "sb.q" = true }\n[axes]\n"train.seed" = [0, 1]\n'
    )
    assert cli.main(["sweep", str(grid)]) == 0
    ft = ["data.cot_test=8", "train.batch_size=4", "train.eval_tokens=256"]
    argv = ["sweep", "--finetune", str(tmp_path / "pre"), "--examples", "8", "--epochs", "1"]
    assert cli.main([*argv, *ft]) == 0
    sweep = tmp_path / "pre-cot-arithmetic"
    cfg = (sweep / "bQ-seed1" / "config.toml").read_text()
    assert "cot-arithmetic" in cfg and str((tmp_path / "pre" / "bQ-seed1").resolve()) in cfg
    assert cli.main([*argv, *ft]) == 0  # resumable: everything is done, nothing reruns
    assert cli.main(["report", str(sweep), "--task", "cot-arithmetic", "--no-plot"]) == 0
    data = json.loads((sweep / "report" / "report.json").read_text())
    diffs = [d for d in data["differences"] if d["metric"] == "cot_acc"]
    assert len(diffs) == 1 and diffs[0]["seeds"] == [0, 1] and diffs[0]["baseline"] == "sym"
    assert {c["variant"] for c in data["cells"]} == {"sym", "bQ"}
