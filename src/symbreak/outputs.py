"""Where a command's output files go: one rule for every ``--out``-style option.

A FILE option given an existing directory, or a path ending in a separator (``DIR/``, made if
missing), writes inside it under the command's default name (``eval --out DIR`` ->
``DIR/<checkpoint>.json``); a path whose parent cannot be a directory
(a file is in the way) is refused before any work is done, naming the option.

An existing file is replaced only when it is an earlier output of the same command: every JSON
a command writes through an ``--out`` option carries ``"symbreak_output": KIND``
(:func:`stamp`), and :func:`output_file` given ``kind`` refuses any other file there (a config,
another command's result, a file of the user's) before the work starts. Directory options
(``analyze --out``, ``report --out``) replace only the files of their own names inside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from symbreak.errors import SymbreakError

OUTPUT_KEY = "symbreak_output"


def stamp(data: dict[str, Any], kind: str) -> dict[str, Any]:
    """``data`` with the mark that makes it replaceable by a later run of the same command."""
    return {OUTPUT_KEY: kind, **data}


def output_kind(path: Path) -> str | None:
    """The ``symbreak_output`` mark of the JSON file at ``path``; None for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data.get(OUTPUT_KEY) if isinstance(data, dict) else None


def output_file(path: str | Path, default_name: str, option: str, kind: str | None = None) -> Path:
    """The file that ``option``'s value ``path`` stands for (see the module docstring); with
    ``kind``, an existing file there must be an earlier ``kind`` output."""
    as_dir = str(path).endswith(("/", "\\"))  # "DIR/": a directory, even one not made yet
    path = Path(path).expanduser()
    if path.is_dir() or as_dir:
        path = path / default_name
        if path.is_dir():
            raise SymbreakError(f"{option}: {path} is a directory; give a file name")
    check_parent(path, option)
    if kind is not None and path.is_file() and output_kind(path) != kind:
        raise SymbreakError(
            f"{option}: {path} exists and is not an earlier `symbreak {kind}` output; "
            f"remove it or choose another {option}"
        )
    return path


def output_dir(path: str | Path, option: str) -> Path:
    """A directory option's value: an existing file there is refused; missing parts are made
    later, by the writer."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise SymbreakError(f"{option}: {path} is a file, not a directory; choose another {option}")
    check_parent(path, option)
    return path


def check_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a directory."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SymbreakError(
                    f"{option}: cannot write {path}: {parent} is a file, not a directory"
                )
            return


def portable_path(path: Path, base: Path | None) -> str:
    """``path`` as a result file records it: relative to ``base`` (the directory the file is
    written to) with POSIX separators, so a results folder can be moved or published whole;
    without ``base``, or when no relative path exists (another drive), the absolute path."""
    target = Path(path).resolve()
    if base is not None:
        try:
            return Path(os.path.relpath(target, Path(base).resolve())).as_posix()
        except ValueError:
            pass
    return target.as_posix()
