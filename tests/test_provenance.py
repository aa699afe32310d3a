"""Every result file says where it comes from: the provenance dict, a run's provenance.json
over a start and a resume, and the provenance in reports and evaluations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import symbreak
from symbreak import provenance as prov
from symbreak.data import load_config
from symbreak.provenance import git_state, provenance

FIELDS = {"symbreak", "commit", "dirty", "torch", "python", "device"}


def tiny(out: Path, name: str = "r", steps: int = 2, *extra: str):
    return load_config(
        overrides=[
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "model.block_size=16",
            "model.vocab_size=64",
            "data.source=addition",
            "data.addition_train=200",
            "data.addition_val=50",
            "train.batch_size=2",
            "train.eval_tokens=64",
            "train.progress=false",
            f"train.max_steps={steps}",
            f"data.cache_dir={out / 'cache'}",
            f"train.out_dir={out}",
            f"train.name={name}",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny addition run trained for 2 steps, then resumed to 4."""
    from symbreak.experiments.training import train_run

    out = tmp_path_factory.mktemp("runs")
    train_run(tiny(out, steps=2))
    first = json.loads((out / "r" / "provenance.json").read_text())
    train_run(tiny(out, steps=4))
    return out / "r", first


def test_the_provenance_dict_has_its_fields_and_types() -> None:
    p = provenance("cpu")
    assert set(p) == FIELDS
    assert p["symbreak"] == symbreak.__version__
    assert isinstance(p["torch"], str) and p["torch"]
    assert p["python"] == ".".join(map(str, sys.version_info[:3]))
    assert p["device"] == "cpu" and provenance()["device"] is None
    assert p["commit"] is None or isinstance(p["commit"], str)
    assert p["dirty"] is None or isinstance(p["dirty"], bool)
    json.dumps(p)  # JSON as it is


def test_in_a_git_checkout_the_commit_is_the_head() -> None:
    source = Path(symbreak.__file__).resolve().parent
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    head = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        pytest.skip("the package source is not in a git work tree")
    p = provenance()
    assert re.fullmatch(r"[0-9a-f]{40}", p["commit"])
    assert p["commit"] == head.stdout.strip()
    assert isinstance(p["dirty"], bool)


def test_without_git_or_outside_a_work_tree_the_commit_is_null(tmp_path, monkeypatch) -> None:
    assert git_state(str(tmp_path)) == (None, None)  # not a work tree
    monkeypatch.setattr(prov.shutil, "which", lambda name: None)
    assert git_state(str(tmp_path / "other")) == (None, None)  # no git at all
    assert prov._git(tmp_path, "status") is None


def test_importing_and_calling_it_loads_no_torch() -> None:
    code = (
        "import sys; from symbreak.provenance import provenance; provenance('cpu'); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(symbreak.__file__).resolve().parents[1])},
    )
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_a_run_records_each_start_and_resume(run_dir) -> None:
    path, first = run_dir
    assert len(first) == 1 and first[0]["step"] == 0
    entries = json.loads((path / "provenance.json").read_text())
    assert len(entries) == 2
    assert entries[0] == first[0]
    assert [e["step"] for e in entries] == [0, 2]
    for e in entries:
        assert set(e) >= FIELDS
        assert e["device"] == "cpu" and e["world_size"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", e["started"])
        assert e["commit"] == provenance()["commit"]


def test_a_failed_fresh_attempt_loses_its_provenance(tmp_path) -> None:
    from symbreak.train.run_dir import ATTEMPT_FILES, PROVENANCE_FILE, clear_attempt

    assert PROVENANCE_FILE in ATTEMPT_FILES
    run = tmp_path / "r"
    run.mkdir()
    (run / PROVENANCE_FILE).write_text("[]\n")
    assert clear_attempt(run) and not (run / PROVENANCE_FILE).exists()


@pytest.mark.slow
def test_report_and_eval_outputs_carry_it(run_dir, tmp_path) -> None:
    from symbreak.eval import evaluate_addition_run, evaluate_run
    from symbreak.experiments.report import build_report

    path, _ = run_dir
    out = tmp_path / "rep"
    assert build_report([path], out=out, plot_figures=False, echo=lambda s: None) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["provenance"] == provenance()
    result = evaluate_run(path, suite="none", val=True, device="cpu", out=tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["provenance"] == result.data["provenance"] == provenance("cpu")
    assert saved["symbreak_version"] == symbreak.__version__  # kept beside it
    added = evaluate_addition_run(path, problems=10, device="cpu", write=False)
    assert added.data["provenance"] == provenance("cpu")
