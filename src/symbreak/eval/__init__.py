"""Evaluation: validation loss (and, later, puzzles and sampling)."""

from symbreak.eval.val_loss import evaluate_loss

__all__ = ["evaluate_loss"]
