"""Where an analysis gets its model and its text: a run directory, or a freshly built config.

``RUN_DIR`` loads the run's checkpoint strictly (:func:`symbreak.runs.load_run`);
``--init KEY=VALUE ...`` builds ``GPT(cfg.model, cfg.sb)`` from the defaults plus those
overrides, initialised from ``train.seed``, as training would start. Either way the model comes
back in eval mode (symmetry-breaking biases at ``sb.eval``).

Held-out text: ``val`` windows of the config's ``data.source`` (the first ones, in order, as
validation uses), or ``random`` token ids drawn uniformly from the real vocabulary with a seeded
generator (no data needed; what the exact tests use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from symbreak.analysis.options import TEXT_SOURCES
from symbreak.config import Config
from symbreak.data import GPT2_VOCAB_SIZE, load_config
from symbreak.errors import DataError, SymbreakError
from symbreak.model import GPT
from symbreak.seeding import keyed_seed


@dataclass
class ModelSource:
    """A model to analyse, with its config and a label for tables and plots."""

    label: str
    cfg: Config
    model: GPT


def build_model(cfg: Config, seed: int) -> GPT:
    """``GPT(cfg.model, cfg.sb)`` initialised under ``torch.manual_seed(seed)``, in eval mode,
    without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(cfg.model, cfg.sb).eval()


def init_model(overrides: list[str]) -> ModelSource:
    """A freshly initialised model of the config ``overrides`` describe (seed: train.seed)."""
    cfg = load_config(None, overrides)
    m = cfg.model
    label = f"init {m.pos_encoding}/{m.mask}/res-{m.residual} L{m.n_layer}"
    return ModelSource(label, cfg, build_model(cfg, cfg.train.seed))


def random_init_control(cfg: Config) -> GPT:
    """The random-init control: the same config, weights from another seed than train.seed."""
    return build_model(cfg, keyed_seed(cfg.train.seed, "random-init-control"))


def load_source(
    run_dir: Path | None, init: list[str] | None, checkpoint: str = "latest"
) -> ModelSource:
    """``RUN_DIR`` or ``--init`` overrides (exactly one of them) -> the model, on the CPU."""
    if (run_dir is None) == (init is None):
        raise SymbreakError("pass a RUN_DIR or --init KEY=VALUE ... (one of them)")
    if init is not None:
        return init_model(init)
    from symbreak.runs import load_run

    run = load_run(run_dir, checkpoint, device="cpu")
    return ModelSource(f"{run.name}@{run.step}", run.cfg, run.model)


def held_out_tokens(cfg: Config, n_seq: int, length: int, text: str, seed: int = 0) -> torch.Tensor:
    """(n_seq, length) token ids to analyse; an error if the source cannot give that many."""
    if text not in TEXT_SOURCES:
        raise SymbreakError(f"--text '{text}' is not one of {', '.join(TEXT_SOURCES)}")
    if length > cfg.model.block_size:
        raise SymbreakError(
            f"sequences of {length} tokens asked for, but the model's sequences are at most "
            f"model.block_size={cfg.model.block_size} tokens"
        )
    if text == "random":
        gen = torch.Generator().manual_seed(keyed_seed(seed, "probe-text"))
        high = min(cfg.model.vocab_size, GPT2_VOCAB_SIZE)
        return torch.randint(0, high, (n_seq, length), generator=gen)
    from symbreak.data import load_run_data

    data = load_run_data(cfg)
    if len(data.val) < n_seq:
        raise DataError(
            f"the validation split of {data.source} has {len(data.val)} windows of "
            f"{cfg.model.block_size} tokens, fewer than the {n_seq} sequences asked for"
        )
    return data.val.get(list(range(n_seq)))[:, :length]
