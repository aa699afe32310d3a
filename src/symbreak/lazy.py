"""Lazy package exports: ``from symbreak.eval import evaluate_run`` works while ``import
symbreak.eval`` alone imports nothing heavy (the command line imports the feature packages
without torch, and each command loads its library only when it runs)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``names[name]`` (a module)
    on first access of ``name``. Use: ``__getattr__, __dir__ = lazy_exports(__name__, {...})``."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted({*vars(module), *names})

    return __getattr__, __dir__
