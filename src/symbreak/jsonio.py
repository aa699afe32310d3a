"""One JSON writer for every result file: strict JSON (NaN and infinities become null, since
JSON has no NaN), written atomically (a temporary file, then a rename)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from symbreak.atomic import write_text_atomic


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, at any depth."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int = 1, ensure_ascii: bool = True) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`), ending in a newline."""
    return (
        json.dumps(json_safe(obj), indent=indent, ensure_ascii=ensure_ascii, allow_nan=False) + "\n"
    )


def write_json_atomic(
    path: str | Path, obj: Any, indent: int = 1, ensure_ascii: bool = True
) -> None:
    """Write :func:`dumps_json` of ``obj`` to ``path`` atomically."""
    write_text_atomic(Path(path), dumps_json(obj, indent, ensure_ascii))
