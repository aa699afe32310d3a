"""Analyses of trained or training models (each module one analysis)."""
