"""Interoperability with other ecosystems: Hugging Face export, GPT-2 weights, hooks.

Nothing here is imported by the core; ``transformers`` is needed only by the modules that say so
(install the extra: ``pip install 'symbreak[hf]'``).
"""

from __future__ import annotations

from symbreak.lazy import lazy_exports

_LAZY = {"export_hf": "symbreak.integrations.export"}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
