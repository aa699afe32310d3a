"""Run a sweep's cells on this machine, ``jobs`` at a time, each in its own child process.

Each child gets ``cores / jobs`` torch threads (``OMP_NUM_THREADS``; oversubscribed threads
made training 2-4x slower on a shared machine), writes its output to the cell's log, and is
killed by the kernel if the sweep dies (``PR_SET_PDEATHSIG``), so a SIGKILLed sweep never leaves
an orphan that would race the next attempt on the same run directory. Ctrl-C (SIGINT) or SIGTERM
asks every running child to checkpoint and stop; the same command resumes them.

Progress: on a terminal, an overall bar (cells done / total, ETA) and one bar per running cell,
read from the cells' ``metrics.csv``; otherwise (a file, a Slurm log) one plain line per event
and a status line every 30 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from symbreak.experiments.cells import (
    Manifest,
    cell_state,
    default_threads,
    last_error,
    log_path,
    run_dir_of,
    train_command,
)
from symbreak.experiments.grid import Cell, Grid

POLL_S = 0.5
PLAIN_EVERY_S = 30.0
STOP_GRACE_S = 120.0


def die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when my parent dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def last_step(run_dir: Path) -> int:
    """The step of the last complete row of ``metrics.csv`` (0 when there is none)."""
    path = run_dir / "metrics.csv"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines[:-1] if lines and not lines[-1] else lines):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return 0


class _Stop(Exception):
    pass


# A child that exits with these codes before its cell is done was stopped by a signal (the
# trainer checkpoints and exits 0 on SIGINT/SIGTERM; 130/143 or -N when a signal killed it):
# an interruption, never a failure.
INTERRUPTED_CODES = (0, 130, 143, -signal.SIGINT, -signal.SIGTERM)


def run_local(
    grid: Grid,
    cells: list[Cell],
    configs: dict[str, Path],
    jobs: int,
    manifest: Manifest,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Train ``cells`` with at most ``jobs`` children at once; return the names that failed.

    Ctrl-C (or SIGTERM) reaches the children too: each checkpoints and stops, and the sweep
    ends with :class:`KeyboardInterrupt`, never reporting them as failed."""
    procs = grid.procs_per_cell
    threads = default_threads(jobs, procs)
    # a train.threads set in the grid (or on the command line) wins over the even split
    configured = {c.config.train.threads for c in cells} - {0}
    if len(configured) == 1:
        threads = configured.pop()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    queue = list(cells)
    running: dict[str, tuple[subprocess.Popen, Cell, object]] = {}
    failed: list[str] = []
    interrupted: list[str] = []
    finished = 0
    tty = sys.stderr.isatty()
    overall = tqdm(total=len(cells), desc=f"sweep {grid.name}", unit="cell", disable=not tty)
    bars: dict[str, tqdm] = {}
    last_plain = time.monotonic()
    echo(f"{jobs} job(s) at a time, {threads} torch thread(s) each")

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop(0)
                log = log_path(grid.sweep_dir, cell.name)
                log.parent.mkdir(parents=True, exist_ok=True)
                fh = open(log, "a")  # noqa: SIM115 (closed when the child ends)
                fh.write(
                    f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} symbreak sweep starts {cell.name}\n"
                )
                fh.flush()
                proc = subprocess.Popen(
                    train_command(configs[cell.name], procs),
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    preexec_fn=die_with_parent,
                )
                running[cell.name] = (proc, cell, fh)
                manifest.write({n: "running" for n in running})
                st = cell_state(cell)
                if tty:
                    bars[cell.name] = tqdm(
                        total=st.total,
                        initial=st.step,
                        desc=cell.name,
                        unit="step",
                        leave=False,
                        dynamic_ncols=True,
                    )
                else:
                    echo(f"start  {cell.name} (step {st.step} of {st.total})")
            for name, (proc, cell, fh) in list(running.items()):
                if name in bars:
                    bar = bars[name]
                    bar.update(max(0, last_step(run_dir_of(cell)) - bar.n))
                rc = proc.poll()
                if rc is None:
                    continue
                fh.close()
                del running[name]
                if name in bars:
                    bars.pop(name).close()
                finished += 1
                overall.update(1)
                state = cell_state(cell)
                if rc == 0 and state.state == "done":
                    manifest.note(name, error=None)
                    msg = f"done   {name}"
                elif rc in INTERRUPTED_CODES:
                    interrupted.append(name)
                    msg = f"stopped {name} at step {state.step} of {state.total} (interrupted)"
                else:
                    failed.append(name)
                    err = last_error(log_path(grid.sweep_dir, name))
                    manifest.note(name, error=err)
                    msg = f"FAILED {name} (exit {rc}): {err}"
                manifest.write({n: "running" for n in running} | {n: "failed" for n in failed})
                if tty:
                    overall.write(msg)
                else:
                    echo(f"{msg}  [{finished}/{len(cells)}]")
                if interrupted:  # the signal that stopped it is the sweep's too
                    raise _Stop("SIGINT")
            if not tty and running and time.monotonic() - last_plain > PLAIN_EVERY_S:
                last_plain = time.monotonic()
                status = ", ".join(
                    f"{n} {last_step(run_dir_of(c))}/{c.config.total_steps}"
                    for n, (_, c, _) in running.items()
                )
                echo(f"[{finished}/{len(cells)} cells] running: {status}")
            time.sleep(POLL_S)
    except (KeyboardInterrupt, _Stop) as e:
        reason = str(e) or "SIGINT"
        echo(f"\n{reason}: asking {len(running)} running cell(s) to checkpoint and stop ...")
        for proc, _, _ in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc, _, fh in running.values():
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()
            fh.close()
        manifest.write({n: "failed" for n in failed})
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, old)
        for bar in bars.values():
            bar.close()
        overall.close()
    return failed
