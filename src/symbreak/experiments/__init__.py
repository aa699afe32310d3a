"""Experiments: one training run (:func:`train_run`), ``symbreak sweep`` (a grid of runs,
resumable, locally or on Slurm through submitit) and ``symbreak report`` (seeds, confidence
intervals, paired tests and curves over any set of runs).

Modules: :mod:`.training` (one run, as ``symbreak train``), :mod:`.grid` (grid file -> cells),
:mod:`.cells` (cell states, manifest, identity checks), :mod:`.sweep` (run a grid),
:mod:`.local` (a process pool on this machine), :mod:`.cluster` (submitit), :mod:`.collect`
(runs -> per-run figures), :mod:`.report` (tables, JSON, PNGs).

Nothing is imported here eagerly (the command line imports this package without torch); import
from the modules, e.g. ``from symbreak.experiments.training import train_run``.
"""
