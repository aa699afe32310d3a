"""One training process per run directory: an exclusive OS file lock for the process's life.

``with run_lock(run_dir): ...`` creates ``run_dir`` if needed and takes ``fcntl.flock(LOCK_EX)``
on ``<run_dir>/.lock``, without waiting. A second process asking for the same directory gets a
:class:`RunLockedError` naming the holder (pid, host, since when, as the holder wrote them into
the file). The kernel drops the lock when the holder's file descriptor closes, which happens on
any exit, ``SIGKILL`` included, so a dead process never leaves a stale lock behind; the file
itself stays (deleting it would let two processes lock two different files of the same name).

Under ``torchrun`` only rank 0 takes the lock (see :func:`symbreak.train.trainer.train`): the
ranks of one job share the run directory by design and rank 0 is the only writer.

``flock`` works on local file systems and on NFSv4 (Linux maps it to an fcntl byte-range lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from symbreak.errors import SymbreakError

LOCK_FILE = ".lock"


class RunLockedError(SymbreakError):
    """Another process holds the run directory's lock."""

    def __init__(self, run_dir: Path, holder: dict | None) -> None:
        self.run_dir, self.holder = Path(run_dir), holder or {}
        who = describe_holder(self.holder)
        super().__init__(
            f"run directory {run_dir} is in use by another training process ({who}); wait for "
            "it to finish, stop it, or choose another train.name"
        )


def describe_holder(holder: dict) -> str:
    """``pid 123 on host node1 since 2026-12-01 10:00:00 UTC``, or what is known of it."""
    parts = []
    if "pid" in holder:
        parts.append(f"pid {holder['pid']}")
    if "host" in holder:
        parts.append(f"on host {holder['host']}")
    if isinstance(holder.get("since"), int | float):
        since = time.gmtime(holder["since"])
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", since))
    return " ".join(parts) or "holder unknown"


def read_holder(run_dir: Path) -> dict | None:
    """What the current (or last) holder wrote into the lock file, or None."""
    try:
        data = json.loads((Path(run_dir) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_locked(run_dir: Path) -> bool:
    """Whether some process holds ``run_dir``'s lock right now (probes without keeping it)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock, if it got one
    return False


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) for the ``with`` block.

    Raises :class:`RunLockedError` at once if another process holds it. Yields ``run_dir``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(run_dir, read_holder(run_dir)) from None
        except BaseException:
            os.close(fd)
            raise
        # The file may have been removed (the run directory deleted) between our open and our
        # lock: then we hold a lock on a file nobody else can see. Retry on the current file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock
