"""Experiments: one training run, a grid of runs, and reports over them, as one command each
(``symbreak train``, ``symbreak sweep``, ``symbreak report``) and the same from Python::

    from symbreak.experiments import build_report, load_grid, run_sweep, train_run

    run_sweep(load_grid("grids/cpu-study.toml"), jobs=2)
    build_report(["runs/cpu-study"])

Modules: :mod:`.training` (one run, as ``symbreak train``: the trainer plus its task metrics),
:mod:`.grid` (grid file -> cells), :mod:`.cells` (cell states, manifest, identity checks),
:mod:`.sweep` (run a grid), :mod:`.local` (a process pool on this machine), :mod:`.cluster`
(submitit), :mod:`.collect` (runs -> per-run figures; the statistics are :mod:`symbreak.stats`),
:mod:`.report` (tables, JSON, PNGs), :mod:`.addition_report` (the addition task). The names
above are imported on first use: the command line imports this package without torch.
"""

from __future__ import annotations

from symbreak.lazy import lazy_exports

_LAZY = {
    "train_run": "symbreak.experiments.training",
    "load_grid": "symbreak.experiments.grid",
    "run_sweep": "symbreak.experiments.sweep",
    "build_report": "symbreak.experiments.report",
    "build_addition_report": "symbreak.experiments.addition_report",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
