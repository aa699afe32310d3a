"""User-facing errors.

Anything a user can cause (bad config, missing or corrupt file, NaN loss, ...) raises a
subclass of :class:`SymbreakError` whose message is one line saying what is wrong and what to
do. The CLI prints ``error: <message>`` and exits non-zero, without a traceback.
"""

from __future__ import annotations

import errno
import os
import re


class SymbreakError(Exception):
    """Base class for errors whose message is meant for the user."""

    exit_code = 2


class ConfigError(SymbreakError):
    """An unknown key, a wrong type or an impossible combination in the config."""


class DataError(SymbreakError):
    """Missing, empty or corrupt data; a token id past the vocabulary."""


class CheckpointError(SymbreakError):
    """A missing, incomplete, corrupt or incompatible checkpoint."""


class TrainingError(SymbreakError):
    """Training cannot go on (non-finite loss, frozen optimizer, ...)."""


class ExperimentError(SymbreakError):
    """A bad grid file, a sweep that would change a trained cell, a report with nothing to say."""


_WRITE_ADVICE = {
    errno.ENOSPC: "free space on that disk and run the command again",
    errno.EDQUOT: "the disk quota is used up: free space and run the command again",
    errno.EFBIG: "a file would pass this process's file-size limit (`ulimit -f`): raise the "
    "limit and run the command again",
    errno.EROFS: "the file system is read-only: choose another output location",
    errno.EACCES: "permission denied: choose another output location or fix its permissions",
}


def io_errno(e: BaseException) -> int | None:
    """The errno of an OSError, or of a library's I/O error that only says ``os error N`` in
    its message (safetensors' Rust errors are not OSErrors)."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno
    m = re.search(r"os error (\d+)", str(e))
    return int(m.group(1)) if m else None


def write_failure(target: object, e: BaseException, retry: str = "") -> str:
    """One line for a failed write: the file or directory asked for (never a temporary one),
    the reason, and what to do about that reason; ``retry`` replaces the generic advice's
    "run the command again" tail where the caller knows better (e.g. resume)."""
    code = io_errno(e)
    reason = os.strerror(code) if code is not None else (str(e).splitlines() or ["I/O error"])[0]
    advice = _WRITE_ADVICE.get(code, "fix that and run the command again")
    if retry:
        advice = advice.replace("run the command again", retry)
    return f"could not write {target} ({reason}); {advice}"
