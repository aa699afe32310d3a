"""``--executor slurm``: the cells as a Slurm job array through submitit.

submitit (maintained by Meta) writes the sbatch array, tracks the jobs and implements the
checkpoint/requeue protocol: shortly before a time limit, or on preemption, Slurm sends the job
``SIGUSR2``; submitit calls the submitted callable's ``checkpoint()`` and requeues the job with
what it returns. Here the callable is :class:`CellTask`: it trains the cell in a child process
(``symbreak train -c CELL.toml``); ``checkpoint()`` sends that child SIGTERM (the trainer
finishes its step, writes a checkpoint and exits) and resubmits the same task, which on restart
resumes the run bit-exactly from that checkpoint.

``--executor submitit-local`` is the same code path through submitit's ``LocalExecutor`` on this
machine (the tests use it; useful to try a grid before a cluster). Multi-GPU cells run one task
per GPU with ``torch.distributed`` variables from submitit's ``TorchDistributedEnvironment``.

submitit pickles the task (four strings and numbers of ours) into the sweep's own
``.sweep/submitit/`` folder to hand it to the job; nothing a user hands us is unpickled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from symbreak.errors import ExperimentError
from symbreak.experiments.cells import (
    BOOKKEEPING,
    Manifest,
    cell_state,
    default_threads,
    last_error,
    log_path,
    train_command,
)
from symbreak.experiments.grid import Cell, Grid
from symbreak.experiments.local import die_with_parent

EXECUTORS = {"slurm": "slurm", "submitit-local": "local"}
CHECKPOINT_GRACE_S = 300.0


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ExperimentError(
            "--executor slurm needs submitit: .venv/bin/pip install -c constraints.txt submitit"
        ) from None
    return submitit


try:  # the task class must exist (and pickle) where submitit is importable
    from submitit.helpers import Checkpointable as _Base
    from submitit.helpers import DelayedSubmission
except ImportError:  # pragma: no cover - submitit is a pinned dependency
    _Base = object  # type: ignore[assignment,misc]


def _child_setup() -> None:
    """In the trainer child: die with the task, and ignore SIGUSR2. Slurm may signal every
    process of the job; the task (submitit) turns USR2 into a clean SIGTERM for the trainer,
    while USR2's default action would kill the trainer without a checkpoint."""
    die_with_parent()
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class CellTask(_Base):
    """Train one cell; on preemption or time-out, checkpoint it and requeue."""

    def __init__(self, config_path: str, log_file: str, procs: int = 1, threads: int = 0) -> None:
        self.config_path, self.log_file, self.procs = config_path, log_file, procs
        self.threads = threads  # > 0: torch threads of the child (jobs sharing one machine)
        self._proc: subprocess.Popen | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.threads > 0:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def __call__(self) -> str:
        env = self._env()
        log = Path(self.log_file)
        if self.procs > 1:  # one task per GPU: submitit knows the ranks and the master node
            import submitit

            dist = submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False
            )
            env = self._env()
            if dist.rank:
                log = log.with_name(f"{log.stem}.rank{dist.rank}.log")
        cmd = train_command(Path(self.config_path), 1)  # the tasks are the ranks
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} submitit job starts\n")
            fh.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_child_setup,
            )
            # poll(), not wait(): wait() holds a lock that checkpoint(), running in the signal
            # handler on this same thread, would need too.
            while (rc := self._proc.poll()) is None:
                time.sleep(0.5)
        if rc != 0:
            raise RuntimeError(f"symbreak train exited with {rc}: {last_error(log)}")
        return "done"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # the trainer checkpoints after this step
            deadline = time.monotonic() + CHECKPOINT_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()
        return DelayedSubmission(
            CellTask(self.config_path, self.log_file, self.procs, self.threads)
        )

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("config_path", "log_file", "procs", "threads")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._proc = None


def submission_parameters(grid: Grid, executor: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters from the grid's ``[slurm]`` table."""
    s = grid.slurm
    procs = grid.procs_per_cell
    params: dict[str, Any] = {
        "name": f"symbreak-{grid.name}",
        "timeout_min": s.get("time_min", 24 * 60),
        "tasks_per_node": procs,
        "nodes": 1,
        "cpus_per_task": s.get("cpus_per_task", 4),
    }
    if executor == "slurm":
        params["gpus_per_node"] = s.get("gpus_per_cell", procs)
        params["slurm_signal_delay_s"] = s.get("signal_delay_s", 120)
        if "mem_gb" in s:
            params["mem_gb"] = s["mem_gb"]
        for key in ("partition", "array_parallelism", "account", "qos"):
            if key in s:
                params[f"slurm_{key}"] = s[key]
    return params


def submit_jobs(
    grid: Grid,
    cells: list[Cell],
    configs: dict[str, Path],
    executor: str,
    manifest: Manifest,
    echo: Callable[[str], None] = print,
) -> list[Any]:
    """Submit ``cells`` as one job array; return submitit's job objects."""
    submitit = _submitit()
    folder = grid.sweep_dir / BOOKKEEPING / "submitit"
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=EXECUTORS[executor])
    ex.update_parameters(**submission_parameters(grid, executor))
    # On one machine (submitit-local) every cell runs at once: split the cores between them.
    threads = default_threads(len(cells), grid.procs_per_cell) if executor != "slurm" else 0
    tasks = [
        CellTask(
            str(configs[c.name]),
            str(log_path(grid.sweep_dir, c.name)),
            grid.procs_per_cell,
            threads,
        )
        for c in cells
    ]
    with ex.batch():
        jobs = [ex.submit(t) for t in tasks]
    for cell, job in zip(cells, jobs, strict=True):
        manifest.note(cell.name, job_id=str(job.job_id), error=None)
    manifest.write({c.name: "submitted" for c in cells})
    echo(
        f"submitted {len(jobs)} cell(s) to {executor} as job array "
        f"{str(jobs[0].job_id).split('_')[0]}; logs in {grid.sweep_dir / BOOKKEEPING}"
    )
    return jobs


def wait_jobs(
    cells: list[Cell], jobs: list[Any], manifest: Manifest, echo: Callable[[str], None] = print
) -> list[str]:
    """Block until every job has ended (requeues included); return the cells that failed."""
    failed = []
    for cell, job in zip(cells, jobs, strict=True):
        try:
            job.result()
        except Exception as e:  # submitit re-raises the job's failure here
            failed.append(cell.name)
            manifest.note(cell.name, error=(str(e).strip().splitlines() or ["failed"])[-1][:300])
        else:
            if cell_state(cell).state != "done":
                failed.append(cell.name)
                manifest.note(cell.name, error="the job ended before the cell's step budget")
        echo(f"{'FAILED' if cell.name in failed else 'done  '} {cell.name}")
    return failed


def submit(
    grid: Grid,
    cells: list[Cell],
    configs: dict[str, Path],
    executor: str,
    manifest: Manifest,
    wait: bool,
    echo: Callable[[str], None] = print,
) -> list[str] | None:
    """Submit; with ``wait`` return the failed cells when all jobs have ended, else None."""
    jobs = submit_jobs(grid, cells, configs, executor, manifest, echo)
    if not wait:
        echo("run the same command again to see states, resume and skip finished cells")
        return None
    return wait_jobs(cells, jobs, manifest, echo)
