"""The optional matplotlib, in one place: figures need the ``plot`` extra, and a command that
draws says so in one line before any work starts, instead of failing after it.

matplotlib is imported only to draw (never at start-up), with the non-interactive Agg backend.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from symbreak.errors import SymbreakError

MATPLOTLIB_PIN = "matplotlib==3.11.2"


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def require_matplotlib(what: str, alternative: str | None = None) -> None:
    """Raise one :class:`SymbreakError` line when matplotlib is missing. ``what`` says who
    draws what ("compare draws its chart"); ``alternative`` how to do without ("pass
    --no-plot")."""
    if not matplotlib_available():
        raise SymbreakError(
            f"{what} with matplotlib, which is not installed: pip install {MATPLOTLIB_PIN} "
            "(or the plot extra: pip install 'symbreak[plot]')"
            + (f"; or {alternative}" if alternative else "")
        )


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed (for
    figures that are optional extras of a report)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
