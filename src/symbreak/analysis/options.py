"""Defaults and choices of the analyses, torch-free.

The analysis modules import these, and so does the command line, which must build its parser
without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from symbreak.errors import SymbreakError

DEFAULT_TOKENS = 65536  # analyze: tokens of the validation split analysed by default
TEXT_SOURCES = ("val", "random")  # probes: held-out text, or uniformly random token ids
NOETHER_QUANTITIES = ("charge", "relative")  # noether: |L|_F, or |L|_F / (|W|_F |P|_F)
DEFAULT_TOP = 50  # analyze: K when --top is not given and the population has >= 5 K ids
MIN_AUTO_TOP = 5  # analyze: the smallest automatic K (a population needs >= 2 x 5 ids)


def auto_top(population: int) -> int:
    """K when --top is not given: :data:`DEFAULT_TOP`, or a fifth of the population when that
    is smaller (each end holds at most 20% of the ids, the middle 60% is the contrast), never
    below :data:`MIN_AUTO_TOP`. 85 ids: K = 17."""
    return min(DEFAULT_TOP, max(MIN_AUTO_TOP, population // 5))


@dataclass
class Options:
    """Knobs of :func:`symbreak.analysis.alignment.analyze_run` (``symbreak analyze``)."""

    top: int | None = None  # K: tokens in each end; None: auto_top(population) per scope
    permutations: int = 1000
    null_directions: int = 100
    min_count: int = 5  # context: ids seen fewer times are left out of the population
    seed: int = 0
    vocab_positions: str = "none"  # "none" | "mean"
    alpha: float = 0.05  # q-value threshold used by the summary and figures
    dtype: str = "fp32"  # in-context forward: "fp32" (exact) or "bf16" (autocast, faster)

    def check(self) -> None:
        if self.top is not None and self.top < 1:
            raise SymbreakError(f"--top must be at least 1, got {self.top}")
        if self.permutations < 1:
            raise SymbreakError(f"--permutations must be at least 1, got {self.permutations}")
        if self.null_directions < 1:
            raise SymbreakError(f"--null-directions must be at least 1, got {self.null_directions}")
        if self.min_count < 1:
            raise SymbreakError(f"--min-count must be at least 1, got {self.min_count}")
        if not 0 < self.alpha < 1:
            raise SymbreakError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if self.dtype not in ("fp32", "bf16"):
            raise SymbreakError(f"--dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.vocab_positions not in ("none", "mean"):
            raise SymbreakError(
                f"--vocab-positions must be none or mean, got {self.vocab_positions!r}"
            )
