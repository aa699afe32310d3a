"""Interoperability with other ecosystems: Hugging Face export, GPT-2 weights, hooks.

Nothing here is imported by the core; ``transformers`` is needed only by the modules that say so
(install the extra: ``pip install 'symbreak[hf]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"export_hf": "symbreak.integrations.export"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
