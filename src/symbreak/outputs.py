"""Where a command's output files go: one rule for every ``--out``-style option.

A FILE option given an existing directory, or a path ending in a separator (``DIR/``, made if
missing), writes inside it under the command's default name (``eval --out DIR`` ->
``DIR/<checkpoint>.json``); a path whose parent cannot be a directory
(a file is in the way) is refused before any work is done, naming the option.
"""

from __future__ import annotations

from pathlib import Path

from symbreak.errors import SymbreakError


def output_file(path: str | Path, default_name: str, option: str) -> Path:
    """The file that ``option``'s value ``path`` stands for (see the module docstring)."""
    as_dir = str(path).endswith(("/", "\\"))  # "DIR/": a directory, even one not made yet
    path = Path(path).expanduser()
    if path.is_dir() or as_dir:
        path = path / default_name
        if path.is_dir():
            raise SymbreakError(f"{option}: {path} is a directory; give a file name")
    check_parent(path, option)
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
