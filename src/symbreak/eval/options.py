"""Defaults of the evaluation functions, torch-free: the command line offers them as option
defaults and must build its parser without importing torch."""

DEFAULT_PER_CATEGORY = 200  # items per built-in category (or reasoning-gym task)
DEFAULT_BATCH_SIZE = 32  # sequences per forward pass when scoring puzzles
BUILTIN_SUITES = ("builtin", "none")  # suites besides reasoning-gym:TASK[,TASK...]
