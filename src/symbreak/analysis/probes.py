"""The positional-symmetry probes of trained runs or fresh models, end to end: what ``symbreak
probe permutation`` and ``symbreak probe position`` do, as plain functions.

Each takes run directories or ``init`` config overrides (a freshly initialised model, seed
``train.seed``), picks held-out text (``text="val"``: the validation split of the config's
``data.source``; ``"random"``: uniformly random token ids) and returns the results, with
``*_json`` helpers for the documents the command writes. The measurements themselves are
:func:`symbreak.analysis.permutation.permutation_test` and
:func:`symbreak.analysis.position.probe_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from symbreak.analysis.permutation import TOLERANCE, PermutationResult, permutation_test
from symbreak.analysis.position import (
    DEFAULT_ALPHA,
    DEFAULT_NEAR,
    PositionProbe,
    probe_positions,
)
from symbreak.analysis.sources import (
    ModelSource,
    held_out_tokens,
    init_model,
    load_source,
    random_init_control,
)
from symbreak.config import MASKS, POS_ENCODINGS
from symbreak.errors import SymbreakError
from symbreak.provenance import provenance

# the fresh models of ``grid=True``: every encoding (NoPE first) x mask x 1-2 layers
GRID_ENCODINGS = ("none", *(pe for pe in POS_ENCODINGS if pe != "none"))
GRID_MASKS = tuple(reversed(MASKS))  # bidirectional first: the exactly invariant case
GRID_LAYERS = (1, 2)


def probe_sources(
    run_dirs: Sequence[str | Path] = (),
    init: Sequence[str] | None = None,
    checkpoint: str = "latest",
) -> list[ModelSource]:
    """The models to probe: each run directory's checkpoint, or one fresh model of ``init``."""
    if init is not None and run_dirs:
        raise SymbreakError("pass RUN_DIRs or --init KEY=VALUE ..., not both")
    if init is not None:
        return [init_model(list(init))]
    if not run_dirs:
        raise SymbreakError("pass a RUN_DIR or --init KEY=VALUE ...")
    return [load_source(Path(d), None, checkpoint) for d in run_dirs]


@dataclass
class PermutationProbe:
    """One model's permutation test: its label, config and result."""

    source: ModelSource
    result: PermutationResult

    def to_json(self) -> dict[str, Any]:
        m = self.source.cfg.model
        return {
            "label": self.source.label,
            "pos_encoding": m.pos_encoding,
            "mask": m.mask,
            "n_layer": m.n_layer,
            "residual": m.residual,
            **self.result.to_json(),
            "model": self.source.cfg.to_dict()["model"],
        }


def probe_permutation(
    run_dirs: Sequence[str | Path] = (),
    *,
    init: Sequence[str] | None = None,
    grid: bool = False,
    checkpoint: str = "latest",
    text: str = "val",
    seed: int = 0,
    lengths: Sequence[int] | None = None,
    sequences: int = 16,
    permutations: int = 4,
    dtype: str = "float64",
    tolerance: float = TOLERANCE,
) -> list[PermutationProbe]:
    """Shuffle tokens 1..n-1 of held-out sequences and measure the largest relative change
    of the logits at position n, for one run (or ``init`` model), or with ``grid=True`` for
    fresh models of every pos_encoding x mask x 1-2 layers (other keys from ``init``).
    ``lengths`` default: 4, 8, 16, ... and ``model.block_size``.

    >>> from symbreak.analysis.probes import probe_permutation
    >>> (p,) = probe_permutation(init=["model.pos_encoding=none", "model.n_layer=1"],
    ...                          text="random")  # doctest: +SKIP
    >>> p.result.invariant  # doctest: +SKIP
    True
    """
    if grid:
        if run_dirs:
            raise SymbreakError("--grid builds fresh models: use it with --init, not a RUN_DIR")
        base = list(init or [])
        sources = [
            init_model(
                [*base, f"model.pos_encoding={pe}", f"model.mask={mask}", f"model.n_layer={layers}"]
            )
            for pe in GRID_ENCODINGS
            for mask in GRID_MASKS
            for layers in GRID_LAYERS
        ]
    else:
        sources = probe_sources(run_dirs, init, checkpoint)
        if len(sources) > 1:
            raise SymbreakError("probe permutation takes one RUN_DIR")
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    probes = []
    for src in sources:
        T = src.cfg.model.block_size
        ns = list(lengths or sorted({2**k for k in range(2, T.bit_length())} | {T}))
        if max(ns) > T:
            raise SymbreakError(
                f"--lengths asks for n={max(ns)} but {src.label} has sequences of at most "
                f"model.block_size={T} tokens"
            )
        if min(ns) < 3:
            raise SymbreakError("--lengths: n must be at least 3 (two tokens to shuffle)")
        tokens = held_out_tokens(src.cfg, sequences, max(ns), text, seed)
        res = permutation_test(src.model, tokens, ns, permutations, seed, torch_dtype, tolerance)
        probes.append(PermutationProbe(src, res))
    return probes


def permutation_lines(probe: PermutationProbe, text: str) -> list[str]:
    """One model's table: the relative change per length n."""
    m, res = probe.source.cfg.model, probe.result
    lines = [
        f"{probe.source.label}: pos_encoding={m.pos_encoding} mask={m.mask} "
        f"n_layer={m.n_layer} residual={m.residual}, {text} text, {res.dtype}",
        f"{'n':>5} {'max rel change':>15} {'mean':>11}",
    ]
    lines += [f"{r.n:>5} {r.max_rel_change:>15.3e} {r.mean_rel_change:>11.3e}" for r in res.lengths]
    return lines


def permutation_summary(probes: Sequence[PermutationProbe]) -> list[str]:
    """One row per model: its largest relative change and whether that is invariant."""
    lines = [f"{'pos_encoding':<12} {'mask':<14} {'layers':>6} {'max rel change':>15}  verdict"]
    for p in probes:
        m, res = p.source.cfg.model, p.result
        verdict = "invariant" if res.invariant else "not invariant"
        lines.append(
            f"{m.pos_encoding:<12} {m.mask:<14} {m.n_layer:>6} {res.max_rel_change:>15.3e}  "
            f"{verdict}"
        )
    return lines


def permutation_json(probes: Sequence[PermutationProbe], text: str, seed: int) -> dict[str, Any]:
    """The JSON document ``symbreak probe permutation --out`` writes."""
    return {
        "probe": "permutation",
        "text": text,
        "seed": seed,
        "results": [p.to_json() for p in probes],
        "provenance": provenance(_device([p.source for p in probes])),
    }


def probe_position(
    run_dirs: Sequence[str | Path] = (),
    *,
    init: Sequence[str] | None = None,
    checkpoint: str = "latest",
    text: str = "val",
    seed: int = 0,
    length: int | None = None,
    fit_sequences: int = 64,
    score_sequences: int = 32,
    alpha: float = DEFAULT_ALPHA,
    near: int = DEFAULT_NEAR,
) -> list[tuple[ModelSource, PositionProbe]]:
    """Per layer, ridge probes of the position from the hidden state and the position x
    position similarity, with random-init and shuffled-label controls, for each run (or the
    ``init`` model). ``length``: positions per sequence (default ``model.block_size``).

    >>> from symbreak.analysis.position import format_table
    >>> from symbreak.analysis.probes import probe_position
    >>> probes = probe_position(["runs/nope", "runs/learned"], length=64)  # doctest: +SKIP
    >>> print(format_table([p for _, p in probes]))  # doctest: +SKIP
    """
    out = []
    for src in probe_sources(run_dirs, init, checkpoint):
        block_size = src.cfg.model.block_size
        T = length or block_size
        if block_size < T:
            raise SymbreakError(
                f"--length {T} is longer than {src.label}'s model.block_size="
                f"{src.cfg.model.block_size}"
            )
        if T < 4:
            raise SymbreakError("--length must be at least 4 (near and distant pairs)")
        if near >= T / 2:
            raise SymbreakError(
                f"--near {near} leaves no near pair apart from the distant ones (|i-j| >= T/2 = "
                f"{T / 2:g}, T={T}); use --near below {T / 2:g}"
            )
        tokens = held_out_tokens(src.cfg, fit_sequences + score_sequences, T, text, seed)
        probe = probe_positions(
            src.label,
            src.model,
            random_init_control(src.cfg),
            tokens[:fit_sequences],
            tokens[fit_sequences:],
            alpha,
            near,
            seed,
        )
        out.append((src, probe))
    return out


def position_json(
    probes: Sequence[tuple[ModelSource, PositionProbe]], text: str, seed: int
) -> dict[str, Any]:
    """The JSON document ``symbreak probe position`` writes."""
    return {
        "probe": "position",
        "text": text,
        "seed": seed,
        "runs": [{**p.to_json(), "model": src.cfg.to_dict()["model"]} for src, p in probes],
        "provenance": provenance(_device([src for src, _ in probes])),
    }


def _device(sources: Sequence[ModelSource]) -> str | None:
    """The device the probed models ran on (the first one's), for the provenance."""
    for src in sources:
        param = next(src.model.parameters(), None)
        if param is not None:
            return str(param.device)
    return None
