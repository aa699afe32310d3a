"""Analyses of trained or training models: bias alignment and token classes (analyze),
Noether charges (noether), one module per concern."""
