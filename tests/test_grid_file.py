"""Grid files that would silently do something other than what they say are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from symbreak.errors import ExperimentError
from symbreak.experiments.grid import load_grid, parse_grid


def test_two_axes_setting_the_same_key_are_refused_naming_it():
    tree = {
        "config": {"train.max_steps": 2},
        "axes": {
            "optim": {"fast": {"optim.lr": 1e-2}, "slow": {"optim.lr": 1e-4}},
            "optim.lr": [1e-3, 3e-3],
        },
    }
    twice = r"optim\.lr is set by two axes \(optim and optim\.lr\)"
    with pytest.raises(ExperimentError, match=twice):
        parse_grid(tree, None, [])


def test_two_variant_axes_setting_the_same_key_are_refused():
    tree = {
        "axes": {
            "a": {"x": {"sb.q": True}, "y": {}},
            "b": {"u": {"sb.q": False, "sb.v": True}},
        }
    }
    with pytest.raises(ExperimentError, match=r"sb\.q is set by two axes \(a and b\)"):
        parse_grid(tree, None, [])


def test_an_empty_grid_file_is_refused(tmp_path: Path):
    grid = tmp_path / "empty.toml"
    grid.write_text("")
    with pytest.raises(ExperimentError, match="no axes, no \\[config\\] and no base"):
        load_grid(grid)


def test_a_grid_with_only_a_config_table_is_one_cell():
    grid = parse_grid({"config": {"train.max_steps": 2}}, None, [])
    assert len(grid.cells()) == 1
