"""Progress display that suits where the output goes.

On a terminal: a tqdm bar redrawn in place. Anywhere else (a file, a pipe, a Slurm log) a bar
is one endless line of carriage returns, so :class:`Progress` prints a plain line instead every
``every`` steps and once at the end, e.g. ``demo: step 120/1000 (12%) loss=3.412 val=3.520``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``update(n)`` after each step, ``set_postfix(key=text)`` for the figures shown,
    ``close()`` at the end (also a context manager)."""

    def __init__(
        self,
        total: int | None,
        *,
        initial: int = 0,
        enabled: bool = True,
        desc: str = "",
        unit: str = "step",
        every: int = 10,
        stream: IO[str] | None = None,
    ) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every = max(1, every)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: dict[str, str] = {}
        self._bar: tqdm | None = None
        self._printed = initial
        if enabled and _is_terminal(self.stream):
            self._bar = tqdm(
                total=total,
                initial=initial,
                unit=unit,
                dynamic_ncols=True,
                desc=desc,
                file=self.stream,
            )

    @property
    def plain(self) -> bool:
        """Whether plain lines are printed (enabled, and not a terminal)."""
        return self.enabled and self._bar is None

    def set_postfix(self, **values: str) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.plain and (self.n % self.every == 0 or self.n == self.total):
            self._line()

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting each one."""
        for item in items:
            yield item
            self.update(1)

    def line(self) -> str:
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        figures = "".join(f" {k}={v}" for k, v in self.postfix.items())
        head = f"{self.desc}: " if self.desc else ""
        of = f"/{self.total}" if self.total else ""  # None: a stream of unknown length
        return f"{head}{self.unit} {self.n}{of}{pct}{figures}"

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._printed = self.n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.plain and self._printed != self.n:
            self._line()  # where it stopped (an interrupt between two lines)
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
