"""Experiments as one command each: ``symbreak sweep`` (a grid of runs, resumable, locally or on
Slurm through submitit) and ``symbreak report`` (seeds, confidence intervals, paired tests and
curves over any set of runs).

Modules: :mod:`.grid` (grid file -> cells), :mod:`.sweep` (manifest, states, identity checks),
:mod:`.local` (a process pool on this machine), :mod:`.cluster` (submitit), :mod:`.collect`
(runs -> per-run figures), :mod:`.stats` (scipy.stats), :mod:`.report` (tables, JSON, PNGs).
"""
