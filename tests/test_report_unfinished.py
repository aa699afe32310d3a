"""``report`` on loose run directories leaves out runs that did not finish, loudly, as it does
for a sweep: a killed run's last loss is not comparable with a finished run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from symbreak.data import load_config
from symbreak.errors import ExperimentError
from symbreak.experiments.report import build_report
from symbreak.train.trainer import train

pytestmark = pytest.mark.slow  # trains runs or a sweep

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
        "model.vocab_size=64", "data.source=addition", "data.addition_train=200",
        "data.addition_val=50", "train.batch_size=2", "train.eval_tokens=64",
        "train.progress=false", "train.eval_every=2"]  # fmt: skip


def _run(root: Path, name: str, steps: int, seed: int = 0) -> Path:
    cfg = load_config(overrides=[*TINY, f"train.max_steps={steps}", f"train.seed={seed}",
                                 f"train.out_dir={root}", f"train.name={name}"])  # fmt: skip
    train(cfg)
    return root / name


def test_a_killed_run_is_left_out_and_named(tmp_path: Path):
    done = [_run(tmp_path, f"done{s}", 4, s) for s in range(2)]
    killed = _run(tmp_path, "killed", 2)
    cfg = killed / "config.toml"  # what a run killed at step 2 of 4 looks like
    cfg.write_text(cfg.read_text().replace("max_steps = 2", "max_steps = 4"))
    lines: list[str] = []
    assert build_report([*done, killed], out=tmp_path / "rep", echo=lines.append) == 0
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["skipped_unfinished"] == ["killed"]
    assert "killed" not in json.dumps(data["cells"])
    assert "Not finished, left out: killed" in "\n".join(lines)

    with pytest.raises(ExperimentError, match="none of the 1 run"):
        build_report([killed], out=tmp_path / "rep2", echo=lines.append)
