"""The command table: every command (and sub-command) answers ``--help`` without torch, and a
mistyped command fails the same way; library code never calls the command line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from symbreak.cli import COMMANDS, build_parser

SRC = Path(__file__).resolve().parents[1] / "src" / "symbreak"


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """Every command path under ``parser`` (``("bench", "optim")`` ...), walked from the parser
    itself so that a new command or target is covered without listing it here."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += _subcommands(sub, (*prefix, name))
    return paths


PATHS = _subcommands(build_parser())


def test_the_table_lists_every_command_once():
    top = [p[0] for p in PATHS if len(p) == 1]
    assert top == list(COMMANDS)
    for nested in ("bench", "probe"):
        assert any(len(p) == 2 and p[0] == nested for p in PATHS)


def test_help_of_every_command_imports_no_torch():
    """In one fresh interpreter: ``--help`` of the top level, every command and every
    sub-command exits 0 with usage on stdout, and torch (and numpy) stay unimported."""
    code = f"""
import contextlib, io, json, sys
from symbreak.cli import main
results = {{}}
for path in [[]] + {json.dumps([list(p) for p in PATHS])}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
            code = None
        except SystemExit as e:
            code = e.code
    results[" ".join(path) or "symbreak"] = [code, "usage:" in out.getvalue()]
heavy = sorted(m for m in ("torch", "numpy") if m in sys.modules)
print(json.dumps({{"results": results, "heavy": heavy}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"--help imported {report['heavy']}"
    assert len(report["results"]) == len(PATHS) + 1
    for path, (code, usage) in report["results"].items():
        assert code == 0 and usage, f"symbreak {path} --help: exit {code}, usage shown: {usage}"


@pytest.mark.parametrize("argv", [["trian"], ["bench", "optimm"], ["probe", "perm"]])
def test_a_mistyped_command_is_a_usage_error_without_torch(argv):
    code = (
        "import sys\nfrom symbreak.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    print(e.code)\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert "invalid choice" in proc.stderr


def test_the_library_never_calls_the_command_line():
    """argparse lives in symbreak.cli only, and only ``python -m symbreak`` runs ``main``."""
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text()
        if not rel.startswith("cli/"):
            assert "import argparse" not in text, f"{rel} imports argparse"
        if rel != "__main__.py":
            assert "cli import main" not in text and "cli.main(" not in text, rel
