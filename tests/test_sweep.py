"""``symbreak sweep`` and ``symbreak report``: grids, cells, resumption and statistics."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from symbreak import stats as sstats
from symbreak.cli import main
from symbreak.data import load_config
from symbreak.errors import ExperimentError
from symbreak.experiments.cells import Manifest, cell_state, prepare_cell, read_manifest
from symbreak.experiments.grid import load_grid

FAST = {
    "model.n_layer": 1,
    "model.n_head": 2,
    "model.n_embd": 32,
    "model.block_size": 32,
    "train.batch_size": 2,
    "train.eval_tokens": 256,
    "train.log_every": 1,
}


def write_grid(path: Path, name: str, out: Path, cache: Path, config: dict, axes: str) -> Path:
    keys = {**FAST, "data.cache_dir": str(cache), **config}
    body = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in keys.items())
    # axes before [config]: a bare key in them (the bad-grid cases) stays top-level
    path.write_text(f'name = "{name}"\nout_dir = "{out}"\n\n{axes}\n\n[config]\n{body}\n')
    return path


GRID_AXES = """
[axes.optim]
adamw = { "optim.name" = "adamw", "optim.lr" = 1e-3 }
sgdm = { "optim.name" = "sgdm", "optim.lr" = 0.05 }

[axes.sb]
sym = {}
bQbV = { "sb.q" = true, "sb.v" = true, "sb.v_mean" = 0.5 }

[axes]
"train.seed" = [0, 1]
"""


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, corpus_cache):
    """2 optimizers x 2 variants x 2 seeds of tiny 4-step runs, trained by `symbreak sweep`."""
    root = tmp_path_factory.mktemp("grid")
    grid = write_grid(root / "grid.toml", "g", root / "runs", corpus_cache,
                      {"train.max_steps": 4, "train.eval_every": 2}, GRID_AXES)
    assert main(["sweep", str(grid), "--jobs", "2"]) == 0
    return grid, root / "runs" / "g"


def val_rows(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f) if r["val_loss"]]


@pytest.mark.slow
def test_every_cell_trains_and_the_manifest_lists_them(grid_sweep):
    _, sweep_dir = grid_sweep
    manifest = read_manifest(sweep_dir)
    names = sorted(c["name"] for c in manifest["cells"])
    assert names == sorted(
        f"{o}-{v}-seed{s}" for o in ("adamw", "sgdm") for v in ("sym", "bQbV") for s in (0, 1)
    )
    for c in manifest["cells"]:
        assert c["state"] == "done" and c["step"] == 4 == c["total_steps"]
        assert (sweep_dir / c["name"] / "metrics.csv").is_file()
        assert c["config"]["train"]["seed"] == c["seed"]
    assert [a["name"] for a in manifest["grid"]["axes"]] == ["optim", "sb", "train.seed"]
    # Zipped settings: each optimizer keeps its own lr; variants set their sb keys.
    cell = next(c for c in manifest["cells"] if c["name"] == "sgdm-bQbV-seed1")
    assert cell["config"]["optim"]["lr"] == 0.05 and cell["config"]["sb"]["v_mean"] == 0.5


@pytest.mark.slow
def test_report_reproduces_metrics_and_scipy(grid_sweep, tmp_path):
    _, sweep_dir = grid_sweep
    out = tmp_path / "rep"
    assert main(["report", str(sweep_dir), "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.json", "curves.png",
                                               "differences.png"}
    assert len(data["runs"]) == 8 and data["baseline"] == "sym"
    for run in data["runs"]:
        rows = val_rows(out / run["run_dir"])
        assert run["final_val_loss"] == rows[-1][1]  # exactly the CSV's number
        best = min(rows, key=lambda r: (r[1], r[0]))
        assert (run["best_val_loss"], run["best_step"]) == (best[1], best[0])
    by = {(r["panel"], r["variant"], r["seed"]): r["final_val_loss"] for r in data["runs"]}
    for cell in data["cells"]:
        x = [by[(cell["panel"], cell["variant"], s)] for s in (0, 1)]
        lo, hi = stats.t.interval(0.95, 1, loc=np.mean(x), scale=stats.sem(x))
        assert cell["val_loss"]["mean"] == pytest.approx(np.mean(x), rel=1e-12)
        assert cell["val_loss"]["sd"] == pytest.approx(np.std(x, ddof=1), rel=1e-12)
        assert (cell["val_loss"]["ci_lo"], cell["val_loss"]["ci_hi"]) == pytest.approx((lo, hi))
    diffs = [d for d in data["differences"] if d["metric"] == "val_loss"]
    assert {(d["panel"], d["variant"]) for d in diffs} == {("adamw", "bQbV"), ("sgdm", "bQbV")}
    for d in diffs:
        a = [by[(d["panel"], "bQbV", s)] for s in (0, 1)]
        b = [by[(d["panel"], "sym", s)] for s in (0, 1)]
        ref = stats.ttest_rel(a, b)
        ci = ref.confidence_interval(0.95)
        assert d["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)), rel=1e-12)
        assert d["t"] == pytest.approx(ref.statistic) and d["p_paired"] == pytest.approx(ref.pvalue)
        assert (d["ci_lo"], d["ci_hi"]) == pytest.approx((ci.low, ci.high))
        assert d["p_welch"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert d["conclusive"] is False  # 2 seeds: the report must say so
    assert "too few seeds to conclude" in (out / "report.md").read_text()


def test_paired_statistics_match_scipy_with_more_seeds():
    rng = np.random.default_rng(0)
    b = rng.normal(3.0, 0.1, 5)
    a = b - 0.05 + rng.normal(0, 0.01, 5)
    d = sstats.paired(a, b)
    ref = stats.ttest_rel(a, b)
    assert d["p_paired"] == pytest.approx(ref.pvalue) and d["conclusive"] and d["significant"]
    assert d["ci_hi"] < 0
    desc = sstats.describe(a)
    lo, hi = stats.t.interval(0.95, 4, loc=a.mean(), scale=stats.sem(a))
    assert (desc["ci_lo"], desc["ci_hi"]) == pytest.approx((lo, hi))
    single = sstats.describe([1.0])
    assert single["n"] == 1 and math.isnan(single["ci_lo"])


@pytest.mark.slow
def test_rerun_skips_finished_cells_and_refuses_identity_changes(grid_sweep, capsys):
    grid, sweep_dir = grid_sweep
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.csv")}
    assert main(["sweep", str(grid)]) == 0
    assert "all 8 cells are done" in capsys.readouterr().out
    assert main(["sweep", str(grid), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("skip (done)") == 8
    # A changed setting of a trained cell is refused, naming the cell; nothing is touched.
    assert main(["sweep", str(grid), "model.n_embd=64", "model.n_head=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cell 'adamw-sym-seed0'") and "model.n_embd" in err
    assert before == {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.csv")}
    # Operational keys (progress, checkpoint cadence) may change; adding a seed adds cells.
    text = grid.read_text().replace("[0, 1]", "[0, 1, 2]")
    bigger = grid.with_name("bigger.toml")
    bigger.write_text(text)
    assert main(["sweep", str(bigger), "--dry-run", "train.checkpoint_every=2"]) == 0
    out = capsys.readouterr().out
    assert out.count("skip (done)") == 8 and "4 of 12 cells would run" in out


def _sweep_proc(grid: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "symbreak", "sweep", str(grid)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


KILL_AXES = """
[axes.sb]
sym = {}
bQbV = { "sb.q" = true, "sb.v" = true }
"""
LONG = {"train.max_steps": 150, "train.eval_every": 50, "train.checkpoint_every": 10,
        "train.seed": 3}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_cache):
    """The uninterrupted sweep that the interrupted ones must equal bit for bit."""
    root = tmp_path_factory.mktemp("ref")
    grid = write_grid(root / "grid.toml", "ref", root / "runs", corpus_cache, LONG, KILL_AXES)
    assert _sweep_proc(grid).wait() == 0
    return root / "runs" / "ref"


def _same_run(a: Path, b: Path) -> None:
    for f in ("model.safetensors", "optimizer.safetensors"):
        pa = a / "checkpoints" / "step_00000150" / f
        pb = b / "checkpoints" / "step_00000150" / f
        assert pa.read_bytes() == pb.read_bytes(), f
    keep = ("step", "tokens", "train_loss", "val_loss", "lr")
    with open(a / "metrics.csv") as fa, open(b / "metrics.csv") as fb:
        ra = [{k: r[k] for k in keep} for r in csv.DictReader(fa)]
        rb = [{k: r[k] for k in keep} for r in csv.DictReader(fb)]
    assert ra == rb


def _wait_for_checkpoint(run_dir: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoints" / "latest").exists():
        assert time.monotonic() < deadline, f"no checkpoint in {run_dir}"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkilled_sweep_resumes_to_the_uninterrupted_result(tmp_path, corpus_cache, reference):
    runs = tmp_path / "runs"
    grid = write_grid(tmp_path / "grid.toml", "ref", runs, corpus_cache, LONG, KILL_AXES)
    sweep_dir = runs / "ref"
    proc = _sweep_proc(grid)
    _wait_for_checkpoint(sweep_dir / "sym")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    g = load_grid(grid)
    states = {c.name: cell_state(c) for c in g.cells()}
    assert states["sym"].state == "partial", states  # killed in the middle of the cell
    assert states["bQbV"].state == "pending"
    assert main(["sweep", str(grid)]) == 0
    for name in ("sym", "bQbV"):
        _same_run(reference / name, sweep_dir / name)
    log = (sweep_dir / ".sweep" / "logs" / "sym.log").read_text()
    assert "resumed at step" in log


def _cmdlines() -> dict[int, tuple[int, str]]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(d.name)] = (ppid, cmd)
    return out


def _parent_of_process_running(config: Path) -> int:
    """The submitit task process: the parent of the trainer that trains ``config``."""
    (ppid,) = {pp for pp, cmd in _cmdlines().values() if f"-c {config}" in cmd}
    return ppid


def _child_of(pid: int) -> int:
    (child,) = [p for p, (pp, _) in _cmdlines().items() if pp == pid]
    return child


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")
def test_submitit_path_requeues_an_interrupted_job(tmp_path, corpus_cache, reference):
    from symbreak.experiments.cluster import submit_jobs, wait_jobs

    grid_path = write_grid(tmp_path / "grid.toml", "ref", tmp_path / "runs", corpus_cache, LONG,
                           KILL_AXES.replace('bQbV = { "sb.q" = true, "sb.v" = true }', ""))
    grid = load_grid(grid_path)
    cells = grid.cells()
    manifest = Manifest(grid, cells, "submitit-local")
    configs = {c.name: prepare_cell(c, grid.sweep_dir) for c in cells}
    (job,) = submit_jobs(grid, cells, configs, "submitit-local", manifest, echo=lambda s: None)
    _wait_for_checkpoint(grid.sweep_dir / "sym")
    # What Slurm does before a time limit or on preemption: SIGUSR2 to the job's processes.
    # (submitit's LocalJob._interrupt signals its controller, which USR2 would kill.)
    task = _parent_of_process_running(configs["sym"])
    os.kill(task, signal.SIGUSR2)
    os.kill(_child_of(task), signal.SIGUSR2)  # the trainer ignores it: no kill, no stop
    assert wait_jobs(cells, [job], manifest, echo=lambda s: None) == []
    log = (grid.sweep_dir / ".sweep" / "logs" / "sym.log").read_text()
    assert log.count("submitit job starts") == 2  # requeued once
    assert "resumed at step" in log
    _same_run(reference / "sym", grid.sweep_dir / "sym")


BAD = [
    ('[axes.sb]\nsym = {}\nbQ = { "sb.qq" = true }\n', "cell 'bQ': unknown config key 'sb.qq'"),
    ("[axes.sb]\n", "axis 'sb' is empty"),
    ('[axes]\n"train.seed" = []\n', "axis 'train.seed' is empty"),
    ("[axes.sb]\nsym = {}\nsym = {}\n", "not valid TOML"),
    ('bogus = 1\n[axes.sb]\nsym = {}\n', "unknown top-level key"),
]


@pytest.mark.parametrize(("axes", "message"), BAD)
def test_bad_grids_fail_with_one_line(tmp_path, corpus_cache, capsys, axes, message):
    grid = write_grid(tmp_path / "grid.toml", "bad", tmp_path / "runs", corpus_cache, {}, axes)
    assert main(["sweep", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.slow
def test_report_bad_input(grid_sweep, tmp_path, capsys):
    _, sweep_dir = grid_sweep
    # runs on different held-out sets have nothing in common
    other = tmp_path / "other"
    other.mkdir()
    src = sweep_dir / "adamw-sym-seed0"
    (other / "config.toml").write_text(
        (src / "config.toml").read_text().replace("eval_tokens = 256", "eval_tokens = 512"))
    (other / "metrics.csv").write_text((src / "metrics.csv").read_text())
    shutil.copytree(src / "checkpoints", other / "checkpoints")  # finished, as src
    assert main(["report", str(src), str(other)]) == 2
    assert "different held-out sets" in capsys.readouterr().err
    # a run without validation rows
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.toml").write_text((src / "config.toml").read_text())
    (empty / "metrics.csv").write_text("step,tokens,train_loss,val_loss,lr,tok_per_s,elapsed_s\n"
                                       "1,64,10.0,,0.001,100,1\n")
    shutil.copytree(src / "checkpoints", empty / "checkpoints")
    assert main(["report", str(src), str(empty)]) == 2
    assert "no validation rows" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(sweep_dir), "--baseline", "nope"]) == 2
    assert "not a variant" in capsys.readouterr().err


@pytest.mark.slow
def test_report_over_loose_runs_labels_by_difference(grid_sweep, tmp_path):
    _, sweep_dir = grid_sweep
    runs = [sweep_dir / f"adamw-{v}-seed{s}" for v in ("sym", "bQbV") for s in (0, 1)]
    out = tmp_path / "loose"
    assert main(["report", *map(str, runs), "--out", str(out), "--no-plot"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert {c["variant"] for c in data["cells"]} == {"sym", "bQ+bV(mV=0.5)"}
    assert data["baseline"] == "sym" and len(data["differences"]) == 1


def test_grid_errors_are_experiment_errors(tmp_path, corpus_cache):
    grid = write_grid(tmp_path / "g.toml", "x", tmp_path / "r", corpus_cache, {},
                      '[axes.a]\nx = { "optim.lr" = 1.0 }\n[axes.b]\nx = {}\n')
    g = load_grid(grid)  # same variant name on two axes: names stay unique
    assert [c.name for c in g.cells()] == ["x-x"]
    with pytest.raises(ExperimentError, match="set by an axis"):
        load_grid(grid.with_name("g.toml"), ["optim.lr=2.0"])
    with pytest.raises(ExperimentError, match="a sweep names its cells"):
        load_grid(grid, ["train.name=x"])
    moved = load_grid(grid, [f"train.out_dir={tmp_path / 'elsewhere'}"])
    assert moved.sweep_dir == tmp_path / "elsewhere" / "x"
    assert moved.cells()[0].config.train.out_dir == str(tmp_path / "elsewhere" / "x")


def test_shipped_grids_parse(capsys):
    root = Path(__file__).resolve().parent.parent / "configs"
    grids = [*sorted((root / "sweeps").glob("*.toml")), root / "paper" / "sweep.toml",
             root / "paper" / "variants.toml", root / "paper" / "sweep-moe.toml",
             root / "cpu-study" / "tune.toml", root / "cpu-study" / "variants.toml",
             root / "cpu-study" / "variants-moe.toml"]
    assert len(grids) >= 4
    for g in grids:
        assert main(["sweep", str(g), "--dry-run", "--executor", "slurm"]) == 0
    assert "nothing was started" in capsys.readouterr().out


@pytest.mark.slow
def test_data_parallel_cells_run_under_torchrun(tmp_path, corpus_cache):
    grid = write_grid(tmp_path / "g.toml", "ddp", tmp_path / "runs", corpus_cache,
                      {"train.max_steps": 2, "train.batch_size": 4}, "[axes.sb]\nsym = {}\n")
    grid.write_text(grid.read_text().replace('out_dir = ', 'procs_per_cell = 2\nout_dir = '))
    assert main(["sweep", str(grid)]) == 0
    log = (tmp_path / "runs" / "ddp" / ".sweep" / "logs" / "sym.log").read_text()
    assert "x 2 processes" in log


@pytest.mark.slow
def test_report_eval_runs_the_puzzle_suite_once(grid_sweep, tmp_path, capsys):
    _, sweep_dir = grid_sweep
    run = sweep_dir / "sgdm-sym-seed0"
    out = tmp_path / "ev"
    assert main(["report", str(run), "--eval", "--out", str(out), "--no-plot"]) == 0
    assert "evaluating sgdm-sym-seed0" in capsys.readouterr().out
    saved = json.loads((run / "eval" / "step_00000004.json").read_text())
    data = json.loads((out / "report.json").read_text())
    (cell,) = data["cells"]
    assert cell["macro_acc"]["mean"] == saved["overall"]["acc"]["macro"]["mean"]
    assert cell["answer_ce"]["mean"] == saved["overall"]["answer_ce"]["macro"]["mean"]
    assert main(["report", str(run), "--eval", "--out", str(out), "--no-plot"]) == 0
    assert "evaluating" not in capsys.readouterr().out  # reused, not recomputed


def test_paper_recipes_agree_with_the_paper_sweep():
    from symbreak.experiments.cells import identity

    root = Path(__file__).resolve().parent.parent / "configs" / "paper"
    cells = {c.name: c for c in load_grid(root / "sweep.toml").cells()}
    newest = {c.name: c for c in load_grid(root / "variants.toml").cells()}
    for name in set(cells) & set(newest):  # the cells both grids hold are the same runs
        assert identity(cells[name].config) == identity(newest[name].config), name
    assert len(set(newest) - set(cells)) == 2 * 2 * 3  # zero-mean and multi4bQ cells
    cells.update(newest)
    grids = ("base.toml", "sweep.toml", "variants.toml")
    files = sorted(p for p in root.glob("*.toml")
                   if p.name not in grids and not p.name.startswith("sweep")
                   and not p.stem.endswith("-moe"))  # fmt: skip
    assert len(files) == 4 * 4 * 2 + 2 * 2
    for path in files:
        cfg = load_config(path, ["train.seed=0"])
        cell = cells[f"{path.stem.rsplit('-', 1)[0]}-{path.stem.rsplit('-', 1)[1]}-seed0"]
        assert identity(cfg) == identity(cell.config), path.name
        assert cfg.model.n_layer == 12 and cfg.train.max_tokens == 500_000_000
    multi = load_config(root / "adamw-multi4bQ-gelu.toml")
    assert (multi.sb.q_components, multi.sb.v_mean) == (4, 0.0)
    moe_cells = {c.name: c for c in load_grid(root / "sweep-moe.toml").cells()}
    moe_files = sorted(p for p in root.glob("*-moe.toml") if not p.name.startswith("sweep"))
    assert len(moe_files) == len(moe_cells) // 3 == 2 * 2  # adamw, ecd x sym, bQbV (GELU)
    for path in moe_files:
        cfg = load_config(path, ["train.seed=0"])
        assert identity(cfg) == identity(moe_cells[f"{path.stem}-seed0"].config), path.name
        assert (cfg.model.mlp, cfg.model.moe_experts, cfg.model.moe_top_k) == ("moe", 8, 2)
    ecd = load_config(root / "ecd-bQbV-prelu.toml")
    assert (ecd.optim.lr, ecd.optim.eta, ecd.optim.F0, ecd.sb.q, ecd.sb.v) == (1.0, 100.0, 2.0,
                                                                              True, True)


def test_cpu_variants_share_the_study_cells():
    from symbreak.experiments.cells import identity

    root = Path(__file__).resolve().parent.parent / "configs" / "cpu-study"
    study = {c.name: c for c in load_grid(root / "study.toml").cells()}
    variants = {c.name: c for c in load_grid(root / "variants.toml").cells()}
    shared = set(study) & set(variants)
    assert len(shared) == 2 * 2 * 3  # {adamw, ecd} x {sym, bQbV} x 3 seeds
    assert load_grid(root / "study.toml").sweep_dir == load_grid(root / "variants.toml").sweep_dir
    for name in shared:
        assert identity(study[name].config) == identity(variants[name].config), name
    assert len(variants) == 2 * 4 * 3
    multi = variants["ecd-multi4bQ-seed2"].config
    assert (multi.sb.q_components, multi.optim.lr, multi.train.max_steps) == (4, 0.3, 3000)
