"""The tables of docs/results/*/README.md are what docs/results/tables.py makes of the committed
JSON: a number typed by hand, or a JSON file changed without regenerating, fails here."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "docs/results/tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_results_table_matches_the_committed_json(tables, capsys) -> None:
    assert tables.main(["--check"]) == 0, capsys.readouterr().err


def test_an_edited_number_is_found(tables) -> None:
    readme = ROOT / "docs/results/cpu-study/README.md"
    text = readme.read_text(encoding="utf-8")
    assert tables.render(readme, text) == text
    edited = text.replace("| ECD | 1.994 ± 0.010 |", "| ECD | 1.994 ± 0.009 |", 1)
    assert edited != text and tables.render(readme, edited) == text


def test_a_missing_or_unknown_table_is_an_error(tables) -> None:
    readme = ROOT / "docs/results/positional/README.md"
    text = readme.read_text(encoding="utf-8")
    without = re.sub(r"<!-- table: addition-bos .*?<!-- end table -->\n", "", text, flags=re.S)
    with pytest.raises(SystemExit, match="no table 'addition-bos'"):
        tables.render(readme, without)
    unknown = text.replace("table: addition-bos (", "table: addition-typo (", 1)
    with pytest.raises(SystemExit, match="unknown table 'addition-typo'"):
        tables.render(readme, unknown)


def test_the_corrected_study_is_worded_by_the_rule(tables) -> None:
    """The study's verdicts follow docs/sweeps.md: ECD's uncorrected p = 0.016 does not survive
    the correction over four optimizers, so it is no detectable difference."""
    text = tables.study_differences()
    ecd = next(line for line in text.splitlines() if line.startswith("| ECD |"))
    assert "[-0.102, -0.029]" in ecd and "no detectable difference" in ecd
    assert "improves" not in text and "hurts" not in text
