"""argparse ``type=`` checkers for numeric command-line flags, one rule for every command.

Each returns a function that turns the flag's text into a number or raises
``argparse.ArgumentTypeError`` with the reason, so argparse stops with its usage and one
``error:`` line naming the flag, never a traceback later. Floats must be finite (``nan`` and
``inf`` parse as floats in Python, and no flag means them); seeds must fit torch's and numpy's
generators.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from symbreak.config import MAX_SEED


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]`` (either end open when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def float_range(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """A finite number in the interval from ``low`` to ``high`` (open ends when asked)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if low_open else '>='} {low:g}, got {value:g}"
            )
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(
                f"must be {'<' if high_open else '<='} {high:g}, got {value:g}"
            )
        return value

    return parse


seed = int_range(0, MAX_SEED)
"""A generator seed: a whole number in [0, 2^63 - 1]."""
