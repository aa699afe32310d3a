"""Interpretability analyses of trained runs (bias alignment and token classes, ...)."""
