"""Numeric options that make no sense stop at parsing, naming the option, before any work."""

from __future__ import annotations

import pytest

from symbreak.cli import main
from symbreak.errors import SymbreakError

CASES = [
    (["probe", "position", "--init", "model.n_layer=1", "--alpha", "-1"], "--alpha"),
    (["probe", "position", "--init", "model.n_layer=1", "--near", "0"], "--near"),
    (["probe", "permutation", "--init", "model.n_layer=1", "--tolerance", "-1"], "--tolerance"),
    (["probe", "permutation", "--init", "model.n_layer=1", "--lengths", "4,,8"], "empty item"),
    (["probe", "permutation", "--init", "model.n_layer=1", "--sequences", "0"], "at least 1"),
    (["probe", "permutation", "--init", "model.n_layer=1", "--seed", "-3"], "--seed"),
    (["analyze", "RUN", "--alpha", "1.5"], "--alpha"),
    (["analyze", "RUN", "--seed", "x"], "--seed"),
    (["report", "RUN", "--threshold", "2"], "--threshold"),
    (["bench", "positional", "--steps", "0"], "--steps"),
    (["bench", "positional", "--threads", "-1"], "--threads"),
]


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[" ".join(a[:3]) for a, _ in CASES])
def test_a_nonsense_value_is_a_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_near_must_leave_distant_pairs():
    from symbreak.analysis.probes import probe_position

    init = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
            "model.vocab_size=64", "data.source=addition"]  # fmt: skip
    with pytest.raises(SymbreakError, match="--near 8 leaves no near pair"):
        probe_position([], init=init, text="random", near=8, length=16)
