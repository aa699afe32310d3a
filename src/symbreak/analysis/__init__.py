"""Analyses of trained (or freshly initialised) models: ``symbreak probe`` and friends."""
