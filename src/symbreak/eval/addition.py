"""``symbreak eval --task addition``: greedy answers to held-out addition problems.

For each validation problem of the run's ``data.addition_*`` settings (regenerated from the
seed, so exactly the problems training never saw), the model is given the 8-character prompt
``"aaa+bbb="`` alone (position 0 onwards, as training windows start when ``model.block_size``
is a multiple of 13) and extends it greedily by 4 characters: argmax over the 13 real
characters, one forward over the prefix per character. This is valid for the bidirectional
mask too: each step's prediction comes from the last position of a forward over the prefix
only, which is exactly how such a model is trained.

Reported: exact match (all 4 answer digits right) and per-digit accuracy by place value
(units, tens, hundreds, thousands; the written order depends on ``data.addition_reverse``),
each with a 95% Wilson interval over problems.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from symbreak.config import Config
from symbreak.data import addition_spec
from symbreak.data.addition import (
    ANSWER,
    VOCAB,
    AdditionSpec,
    decode_chars,
    encode_problems,
    split_problems,
)
from symbreak.errors import SymbreakError
from symbreak.stats import wilson_interval

PLACES = ("units", "tens", "hundreds", "thousands")


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module,
    prompts: torch.Tensor,
    n_new: int = ANSWER,
    batch_size: int = 256,
) -> torch.Tensor:
    """(N, n_new) greedy continuations of (N, P) prompt ids, argmax over the first 13 ids."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for chunk in prompts.split(batch_size):
            x = chunk.to(device)
            for _ in range(n_new):
                # through forward (13-id logits are cheap), so a sharded model gathers its weights
                logits = model(x)[0][:, -1, :VOCAB]
                x = torch.cat([x, logits.argmax(-1, keepdim=True)], dim=1)
            out.append(x[:, -n_new:].cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _rate(hits: np.ndarray) -> dict[str, float | int]:
    n = int(hits.size)
    k = float(hits.sum())
    lo, hi = wilson_interval(k, n)
    return {"mean": k / n, "lo": lo, "hi": hi, "n": n}


@functools.lru_cache(maxsize=4)
def _val_problems(spec: AdditionSpec) -> np.ndarray:
    """The held-out operand pairs (read-only), drawn once per spec: a trainer evaluating every
    few hundred steps would otherwise reshuffle all 500,500 pairs each time (~40 ms)."""
    problems = split_problems(spec)["val"]
    problems.setflags(write=False)
    return problems


def evaluate_addition(
    model: torch.nn.Module, cfg: Config, n_problems: int | None = None, batch_size: int = 256
) -> dict[str, Any]:
    """Exact match and per-digit accuracy on the run's validation problems (JSON-ready)."""
    if cfg.data.source != "addition":
        raise SymbreakError(
            f"--task addition needs a run trained with data.source=addition; this run used "
            f"data.source={cfg.data.source!r}"
        )
    spec = addition_spec(cfg.data)
    P = spec.prompt  # "aaa+bbb=", with a leading newline under data.addition_bos
    if cfg.model.block_size < P + ANSWER - 1:
        raise SymbreakError(
            f"model.block_size={cfg.model.block_size} cannot hold a prompt and its answer "
            f"({P + ANSWER - 1} characters)"
        )
    problems = _val_problems(spec)
    if n_problems is not None:
        if n_problems > len(problems):
            raise SymbreakError(
                f"--problems {n_problems} is more than the run's {len(problems)} validation "
                "problems (data.addition_val)"
            )
        problems = problems[:n_problems]
    lines = torch.from_numpy(encode_problems(problems, spec.reverse, spec.bos).astype(np.int64))
    lines = lines.view(len(problems), -1)
    prompts, truth = lines[:, :P], lines[:, P : P + ANSWER]
    got = greedy_answers(model, prompts, ANSWER, batch_size)
    right = (got == truth).numpy()
    # written position -> place value: most significant first unless reversed
    place_of = list(range(ANSWER)) if spec.reverse else list(range(ANSWER - 1, -1, -1))
    per_digit = {PLACES[place_of[i]]: _rate(right[:, i]) for i in range(ANSWER)}
    examples = [
        {"prompt": decode_chars(p), "expected": decode_chars(t), "got": decode_chars(g)}
        for p, t, g in zip(prompts[:5].tolist(), truth[:5].tolist(), got[:5].tolist(), strict=True)
    ]
    return {
        "task": "addition",
        "problems": len(problems),
        "reverse": spec.reverse,
        "seed": spec.seed,
        "exact_match": _rate(right.all(axis=1)),
        "per_digit": {p: per_digit[p] for p in PLACES},
        "examples": examples,
        "method": "prompt 'aaa+bbb=' alone (after a newline with data.addition_bos), 4 greedy "
        "characters (argmax over the 13 real characters), one forward over the prefix per "
        "character; 95% Wilson intervals",
    }


def format_addition(result: dict[str, Any]) -> str:
    def row(name: str, r: dict) -> str:
        return f"{name:<12} {r['mean']:>7.3f}  [{r['lo']:.3f}, {r['hi']:.3f}]"

    lines = [
        f"addition: {result['problems']} held-out problems"
        + (" (reversed answers)" if result["reverse"] else ""),
        f"{'metric':<12} {'mean':>7}  95% interval",
        row("exact match", result["exact_match"]),
    ]
    lines += [row(place, r) for place, r in result["per_digit"].items()]
    return "\n".join(lines)
