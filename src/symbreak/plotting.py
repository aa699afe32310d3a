"""The optional matplotlib, in one place: figures need the ``plot`` extra, and a command that
draws says so in one line before any work starts, instead of failing after it.

matplotlib is imported only to draw (never at start-up), with the non-interactive Agg backend.

Labels in any script: figures draw with DejaVu Sans (Latin, Greek, Cyrillic) and fall back,
glyph by glyph, to any installed font of :data:`FALLBACK_FONTS` (CJK, Arabic, ...). Characters
of run names that no installed font can draw would come out as boxes, with one matplotlib
warning per glyph; :func:`check_labels` says so once, in one line, naming the characters.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Iterable
from typing import Any

from symbreak.errors import SymbreakError

MATPLOTLIB_PIN = "matplotlib==3.11.2"
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans",
    "Noto Sans Arabic",
    "Noto Sans Devanagari",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Arial Unicode MS",
)
_warned: set[str] = set()


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
    _configure_fonts()
    return plt


def _configure_fonts() -> None:
    import matplotlib

    families = [f for f in ("DejaVu Sans", *FALLBACK_FONTS) if f in _installed_families()]
    matplotlib.rcParams["font.family"] = families or ["sans-serif"]
    # check_labels reports missing glyphs once; matplotlib would warn once per glyph and figure
    warnings.filterwarnings(
        "ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning
    )


def _installed_families() -> set[str]:
    from matplotlib import font_manager

    return {f.name for f in font_manager.fontManager.ttflist}


def _coverage() -> set[int]:
    """Every code point some font of the figures' family list can draw."""
    from matplotlib import font_manager, ft2font

    wanted = {"DejaVu Sans", *FALLBACK_FONTS}
    points: set[int] = set()
    for f in font_manager.fontManager.ttflist:
        if f.name in wanted:
            try:
                points.update(ft2font.FT2Font(f.fname).get_charmap())
            except (OSError, RuntimeError):
                continue
    return points


def missing_glyphs(texts: Iterable[str]) -> str:
    """The characters of ``texts`` (in order, once each) that no installed font draws."""
    cover = _coverage()
    seen = dict.fromkeys(c for t in texts for c in t if not c.isspace() and ord(c) not in cover)
    return "".join(seen)


def check_labels(texts: Iterable[str], stream: Any = None) -> str:
    """Warn once per process, in one line on stderr, about characters of figure labels (run
    names) that will show as boxes; returns those characters. Also turns on the fallback fonts
    for figures drawn without :func:`pyplot` (``matplotlib.figure.Figure`` directly)."""
    _configure_fonts()
    missing = missing_glyphs(texts)
    new = "".join(c for c in missing if c not in _warned)
    if new:
        _warned.update(new)
        print(
            f"warning: no installed font draws {new!r} (in run names); those characters show "
            "as boxes in the figures: install a font that covers them (e.g. Noto Sans CJK for "
            "Chinese, Japanese or Korean) or rename the runs",
            file=stream or sys.stderr,
        )
    return missing
