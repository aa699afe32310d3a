"""``torch.compile`` that never stops a run: on a compile failure, one warning, then eager.

Compiling needs a working toolchain at run time (inductor writes C++ on CPU, Triton on GPU);
a machine without one should still train, just slower. The failure shows up at the first call
(tracing and compiling happen there), so the wrapper tries the compiled function, and on any
dynamo/inductor error warns once and calls the eager ``fallback`` from then on. Errors of the
computation itself are not swallowed: the eager call raises them again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class CompiledOrEager:
    """Call ``torch.compile(fn, **compile_kw)``; if compiling fails, warn (naming ``setting``,
    what asked for it, and ``off``, the setting that skips the attempt) and call ``fallback``
    (default ``fn``) ever after."""

    def __init__(
        self,
        fn: Callable[..., Any],
        setting: str,
        off: str,
        fallback: Callable[..., Any] | None = None,
        **compile_kw: Any,
    ) -> None:
        self.fallback = fallback if fallback is not None else fn
        self.setting, self.off = setting, off
        self.compiled: Callable[..., Any] | None = torch.compile(fn, **compile_kw)

    @property
    def failed(self) -> bool:
        return self.compiled is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:
                # imported here: torch._dynamo takes ~1 s to import, and every command imports
                # this module (through the model) before knowing whether it compiles anything
                from torch._dynamo.exc import TorchDynamoException

                if not isinstance(exc, TorchDynamoException):
                    raise
                self.compiled = None
                warnings.warn(
                    f"{self.setting}: compiling failed ({_first_line(exc)}); running eagerly "
                    f"from here on ({self.off} skips the attempt)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.fallback(*args, **kwargs)
