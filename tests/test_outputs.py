"""One rule for every ``--out`` FILE: a command replaces only its own earlier output, refuses
anything else before the work, and records run paths relative to the file it writes."""

from __future__ import annotations

import json

import pytest

from symbreak.cli import main
from symbreak.errors import SymbreakError
from symbreak.outputs import output_file, output_kind, portable_path, stamp

PROBE_INIT = ["--init", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
              "model.block_size=16", "model.vocab_size=64", "data.source=addition"]  # fmt: skip
PERMUTATION = ["probe", "permutation", *PROBE_INIT, "--text", "random", "--lengths", "4",
               "--sequences", "2", "--permutations", "2"]  # fmt: skip


def test_output_file_replaces_only_its_own_kind(tmp_path):
    mine, theirs, plain = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.txt"
    mine.write_text(json.dumps(stamp({"x": 1}, "eval")))
    theirs.write_text(json.dumps(stamp({"x": 1}, "probe position")))
    plain.write_text("my notes")
    assert output_kind(mine) == "eval" and output_kind(plain) is None
    assert output_file(mine, "eval.json", "--out", kind="eval") == mine
    for path in (theirs, plain):
        with pytest.raises(SymbreakError, match="is not an earlier `symbreak eval` output"):
            output_file(path, "eval.json", "--out", kind="eval")
    fresh = tmp_path / "new.json"
    assert output_file(fresh, "eval.json", "--out", kind="eval") == fresh


def test_probe_permutation_refuses_a_foreign_file_before_probing(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text("[model]\nn_layer = 1\n")
    assert main([*PERMUTATION, "--out", str(config)]) != 0
    err = capsys.readouterr().err
    assert "is not an earlier `symbreak probe permutation` output" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert config.read_text() == "[model]\nn_layer = 1\n"  # untouched
    out = tmp_path / "perm.json"
    assert main([*PERMUTATION, "--out", str(out)]) == 0
    assert output_kind(out) == "probe permutation"
    assert main([*PERMUTATION, "--out", str(out)]) == 0  # its own output: replaced
    # another probe's output is not theirs either
    assert main(["probe", "position", *PROBE_INIT, "--text", "random", "--no-plot",
                 "--out", str(out)]) != 0  # fmt: skip
    assert "not an earlier `symbreak probe position` output" in capsys.readouterr().err


def test_eval_refuses_a_foreign_file_and_writes_portable_paths(tmp_path, make_run, capsys):
    run = make_run(tmp_path / "runs", "r", train={"eval_tokens": 2048})
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert main(["eval", str(run.path), "--suite", "none", "--val", "--out", str(notes)]) != 0
    assert "not an earlier `symbreak eval` output" in capsys.readouterr().err
    assert json.loads(notes.read_text()) == {"mine": True}
    out = tmp_path / "results" / "eval.json"
    assert main(["eval", str(run.path), "--suite", "none", "--val", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["symbreak_output"] == "eval"
    assert data["run_dir"] == "../runs/r"
    assert not data["checkpoint"].startswith("/")
    assert (out.parent / data["checkpoint"]).exists()


def test_portable_path_is_relative_to_the_writing_directory(tmp_path):
    assert portable_path(tmp_path / "s" / "cell", tmp_path / "s") == "cell"
    assert portable_path(tmp_path / "run", tmp_path / "a" / "b") == "../../run"
    assert portable_path(tmp_path / "run", None) == (tmp_path / "run").resolve().as_posix()
