"""Atomic file writes: a temporary file beside the target, fsync, then rename.

A reader (or a resumed run) sees the old file or the new one, never half of one. Files and
directories end up with the permissions of any other file the user creates (0666 / 0777 minus
the umask): temporary-file helpers (``tempfile.mkstemp``, ``mkdtemp``, safetensors'
``save_file``) create them private (0600 / 0700), which :func:`apply_umask` undoes before they
are renamed into place, so shards and checkpoints can be shared as the user's umask says.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, newlines as given) atomically, creating the parent
    directory if needed."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, creating the parent directory if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file the user asked for, never the temporary one
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir()`` would have: 0666 (files) or
    0777 (directories) minus the umask."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; a no-op where directories cannot be fsynced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
