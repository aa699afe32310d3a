"""Bad input from a new user ends in one clear line naming the right thing."""

from __future__ import annotations

import json
import math

import pytest

from symbreak import cli
from symbreak.config import all_keys
from symbreak.data import load_config
from symbreak.errors import ConfigError, DataError, SymbreakError

# (argv before the bad flag, flag, bad values): every numeric flag of every command.
NUMERIC_FLAGS = [
    (["sample", "r", "--prompt", "x"], "--temperature", ["nan", "inf", "-inf", "-1"]),
    (["sample", "r", "--prompt", "x"], "--seed", [str(2**64), "-1"]),
    (["sample", "r", "--prompt", "x"], "--top-k", ["-1", "1.5"]),
    (["sample", "r", "--prompt", "x"], "--max-new-tokens", ["-1"]),
    (["eval", "r"], "--suite-seed", [str(2**63), "-1"]),
    (["eval", "r"], "--per-category", ["0"]),
    (["eval", "r"], "--batch-size", ["0"]),
    (["compare", "r", "s"], "--suite-seed", [str(2**70)]),
    (["prepare", "x", "--out", "o"], "--val-fraction", ["nan", "inf", "0", "1", "1.5"]),
    (["bench", "optim"], "--steps", ["0"]),
    (["bench", "optim"], "--threads", ["0", "100000"]),
    (["bench", "train"], "--warmup", ["-1"]),
]


@pytest.mark.parametrize(("argv", "flag", "values"), NUMERIC_FLAGS)
def test_numeric_flags_refuse_nonfinite_and_out_of_range_values(argv, flag, values, capsys):
    for value in values:
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args([*argv, flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"error: argument {flag}" in err.strip().splitlines()[-1], (flag, value)


def test_good_numeric_flags_still_parse():
    args = cli.build_parser().parse_args(
        ["sample", "r", "--prompt", "x", "--temperature", "0", "--seed", str(2**63 - 1)]
    )
    assert args.temperature == 0.0 and args.seed == 2**63 - 1


FLOAT_KEYS = [(k, t.split(" | ")) for k, t, _ in all_keys() if "float" in t]


@pytest.mark.parametrize(("key", "types"), FLOAT_KEYS, ids=[k for k, _ in FLOAT_KEYS])
def test_every_float_key_refuses_infinity_like_nan(key, types):
    for bad in ("inf", "-inf", "nan"):
        values = [bad] if "float" in types else []
        values += [f"[0.1, {bad}]"] if "list of float" in types else []
        for value in values:
            with pytest.raises(ConfigError, match=f"{key}=.*not a finite number"):
                load_config(overrides=[f"{key}={value}"])


def test_seeds_must_fit_the_generators():
    for key in ("train.seed", "sb.seed"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(overrides=[f"{key}=-1"])
        with pytest.raises(ConfigError, match="64-bit"):
            load_config(overrides=[f"{key}={2**64}"])
    assert load_config(overrides=[f"train.seed={2**63 - 1}"]).sb.seed == 2**63 - 1


def test_error_messages_name_the_right_thing(tmp_path):
    with pytest.raises(ConfigError, match=r"^train\.max_tokens"):
        load_config(overrides=["train.max_tokens=-5"])
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bare = tmp_path / "bare.toml"
    bare.write_text("lr = 3e-4\n[train]\nmax_steps = 5\n")
    with pytest.raises(ConfigError, match=r"'lr' is a key outside any section.*optim\.lr"):
        load_config(bare)
    with pytest.raises(ConfigError, match="unknown section"):  # a real table stays a section
        bare.write_text("[optimm]\nlr = 1\n")
        load_config(bare)


def test_a_typo_of_shakespeare_gets_a_suggestion(tmp_path, monkeypatch):
    from symbreak.data import load_data

    monkeypatch.chdir(tmp_path)
    for typo in ("shakespear", "Shakespeare", "shakspeare"):
        with pytest.raises(DataError, match="did you mean 'shakespeare'"):
            load_data(typo, 16, 50304)


def test_threads_key_is_checked():
    assert load_config().train.threads == 0
    with pytest.raises(ConfigError, match=r"train\.threads"):
        load_config(overrides=["train.threads=-1"])
    with pytest.raises(ConfigError, match=r"train\.threads"):
        load_config(overrides=["train.threads=100000"])


def test_a_puzzle_category_named_like_an_average_row_is_refused():
    from symbreak.eval.puzzles import parse_puzzle_line

    for name in ("macro", "micro", "Macro"):
        line = f'{{"category": "{name}", "prompt": "1, 2,", "expected": " 3"}}'
        with pytest.raises(DataError, match="average row"):
            parse_puzzle_line(line)
    assert parse_puzzle_line('{"category": "macros", "prompt": "a", "expected": " b"}')


def test_what_the_machine_refuses_is_one_line_for_every_command(tmp_path, monkeypatch, capsys):
    import symbreak.data as data

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(data, "prepare_inputs", full)
    (tmp_path / "a.txt").write_text("hello\n")
    code = cli.main(["prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "out")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and line.startswith("error: No space left on device: ")
    assert math.isfinite(code)
    with pytest.raises(SymbreakError):  # library callers still get the exception
        raise SymbreakError("x")


def test_prepare_dir_skips_its_own_outputs_and_binary_files(tmp_path, capsys):
    from symbreak.data import prepare_texts

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("alpha beta gamma\n" * 40)
    (corpus / "b.txt").write_text("delta epsilon\n" * 40)
    (corpus / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    prepare_texts([("x", "one two\n" * 30), ("y", "three\n" * 30)], corpus / "old",
                  show_progress=False)  # an earlier prepare into the same tree
    out = tmp_path / "out"
    argv = ["prepare", str(corpus), "--out", str(out), "--encoding-errors", "replace"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipped 4 file(s) that are not text" in printed and "img.png (binary" in printed
    meta = json.loads((out / "meta.json").read_text())
    names = sorted(meta["documents"]["train"] + meta["documents"]["val"])
    assert names == [str(corpus / "a.txt"), str(corpus / "b.txt")]
    assert {s["reason"] for s in meta["skipped"]} == {
        "a token shard", "the meta.json of a prepared dataset", "binary (not text)"}
    with pytest.raises(DataError, match="is binary"):  # named explicitly: an error, not a skip
        from symbreak.data import read_text_inputs

        read_text_inputs([corpus / "img.png"], errors="replace")
