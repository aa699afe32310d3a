"""Analyses of trained or training models: bias alignment and token classes (analyze),
Noether charges (noether), positional-symmetry probes (probe), one module per concern.

The functions behind the commands, imported on first use (importing this package costs
nothing)::

    from symbreak.analysis import analyze_run, plot_noether, probe_permutation, probe_position

Modules: :mod:`.alignment` (:func:`analyze_run`), :mod:`.noether_plot`
(:func:`plot_noether`), :mod:`.probes` (:func:`probe_permutation`, :func:`probe_position`,
over :mod:`.permutation` and :mod:`.position`), :mod:`.options` (defaults, torch-free).
"""

from __future__ import annotations

from symbreak.lazy import lazy_exports

_LAZY = {
    "Options": "symbreak.analysis.options",
    "analyze_run": "symbreak.analysis.alignment",
    "plot_noether": "symbreak.analysis.noether_plot",
    "probe_permutation": "symbreak.analysis.probes",
    "probe_position": "symbreak.analysis.probes",
    "permutation_test": "symbreak.analysis.permutation",
    "probe_positions": "symbreak.analysis.position",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
