"""Where a result file comes from: the symbreak version, the git commit of its source tree (and
whether that tree had uncommitted changes), the torch and Python versions, and the device.

Every result file (reports, analyses, evaluations, sweep manifests, probe outputs, and each
training run's ``provenance.json``) records this dict, so a number can be traced to the code
that produced it. The commit is found by running ``git`` in the directory of the installed
package source, only when that directory is inside a git work tree; it is null for an
installed wheel, or when git is missing. The lookup runs once per process. Torch is not
imported: its version comes from the installed distribution's metadata.
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import symbreak

_GIT_TIMEOUT_S = 10


def _git(source: Path, *args: str) -> str | None:
    """The stripped stdout of ``git args`` run in ``source``, or None on any failure."""
    exe = shutil.which("git")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *args],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_state(source: str | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git work tree holding ``source`` (default: the package
    source directory); ``(None, None)`` outside a work tree or without git. ``dirty`` is None
    when the status cannot be read."""
    where = Path(source) if source is not None else Path(symbreak.__file__).resolve().parent
    if not where.is_dir() or _git(where, "rev-parse", "--is-inside-work-tree") != "true":
        return None, None
    commit = _git(where, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None, None
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def _torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def provenance(device: str | None = None) -> dict[str, Any]:
    """The provenance of a result computed now (see the module docstring); ``device`` is the
    device it was computed on (``"cuda"``, ``"cpu"``, ...), or None when not applicable."""
    commit, dirty = git_state()
    return {
        "symbreak": symbreak.__version__,
        "commit": commit,
        "dirty": dirty,
        "torch": _torch_version(),
        "python": platform.python_version(),
        "device": None if device is None else str(device),
    }
