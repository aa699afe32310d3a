"""The floors of the code (docs/architecture.md) are an import-linter contract in pyproject.toml
that ``make lint`` checks; here: the contract names every module, so a new one cannot slip past
it, and a lower floor importing a higher one really breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "symbreak"


def _layers() -> list[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    floors = next(c for c in contracts if c["name"] == "Floors point down")
    return [m.strip() for layer in floors["layers"] for m in layer.split("|")]


def test_the_layers_contract_names_every_module_and_package() -> None:
    named = set(_layers())
    present = {
        f"symbreak.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    }
    assert present - named == set(), "add these to [tool.importlinter] in pyproject.toml"
    assert named - present == set(), "the contract names modules that do not exist"


def test_a_lower_floor_importing_a_higher_one_breaks_the_contract(tmp_path: Path) -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed: make setup installs import-linter")
    tree = tmp_path / "src"
    shutil.copytree(PACKAGE, tree / "symbreak")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tree), "PATH": str(Path(sys.executable).parent)}
    ok = subprocess.run([exe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    config = tree / "symbreak" / "config.py"
    config.write_text(config.read_text() + "\nfrom symbreak.train import trainer  # noqa\n")
    broken = subprocess.run([exe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode != 0
    assert "symbreak.config -> symbreak.train" in broken.stdout
