"""Which token classes each head amplifies or suppresses with ``<bQ>``: the whole analysis.

With an unlearned query bias, ``(q + bQ).k = q.k + bQ.k``: every key t of a head gets the
query-independent logit bonus ``b_t = <bQ>.k_t / sqrt(d)`` (nats). Per layer l, head h and
scope (``vocab``: layer-0 keys of each token id alone; ``context``: mean key of each token id
over held-out text, every layer; see keys.py), over the scope's population of token ids:

* **bonus** ``b_t`` and **cosine** ``cos(k_t, <bQ>)`` (context: mean over occurrences);
* **selectivity** ``std_t(b_t)`` (population std, nats): how much <bQ> separates tokens;
* **enrichment** of each class in the top-K ("amplified") and bottom-K ("suppressed") ends,
  with exact hypergeometric p-values and BH q-values over every (head, class, end) of the scope
  (enrichment.py); K is ``--top``, or without it :func:`~symbreak.analysis.options.auto_top`
  of the scope's population (:func:`choose_top`);
* **nulls**: R random directions with the norm of the head's <bQ> (directions.py), through the
  same computation: ``null_percentile`` is the percentile of the selectivity among them, and
  ``enrichment_null_percentile`` that of the strongest class enrichment ratio of each end.

:func:`analyze_model` returns the JSON-ready dict (schema in docs/analysis.md); everything random is
seeded, so the same inputs give the same dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from symbreak import __version__
from symbreak.analysis import enrichment as enr
from symbreak.analysis.classes import classify_vocab, token_string
from symbreak.analysis.directions import Direction, probe_directions, random_directions
from symbreak.analysis.keys import context_stats, vocab_keys
from symbreak.analysis.options import DEFAULT_TOP, MIN_AUTO_TOP, Options, auto_top
from symbreak.analysis.text import windows
from symbreak.data.tokenizer import GPT2_VOCAB_SIZE, Tokenizer
from symbreak.device import autocast, resolve_dtype
from symbreak.errors import DataError, SymbreakError
from symbreak.model import GPT
from symbreak.provenance import provenance
from symbreak.runs import Run
from symbreak.seeding import keyed_seed

SCHEMA = "symbreak.analysis/1"
Progress = Callable[[str], None]
ENDS = ("amplified", "suppressed")


def _f(x: float) -> float | None:
    """A float for JSON: 6 significant digits; None for nan/inf (JSON has neither)."""
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------
# One scope
# --------------------------------------------------------------------------------------------


@dataclass
class ScopeInput:
    name: str  # "vocab" | "context"
    layers: list[int]
    population: torch.Tensor  # (N,) token ids
    keys: torch.Tensor  # (len(layers), N, H, d) float64: per-id (mean) keys
    cos: torch.Tensor | None  # (len(layers), N, H) mean cosine; None: cosine of ``keys``
    counts: torch.Tensor  # (V,) occurrences per id in the analysed text
    top: int  # K: token ids in each end (choose_top)


def key_bonus(keys: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The logit bonus ``<bQ>.k_t / sqrt(d)`` (nats): keys (N, H, d), dirs (H, d) -> (H, N)."""
    return torch.einsum("nhd,hd->hn", keys, dirs) / math.sqrt(keys.shape[-1])


def _check_top(k: int, n: int, scope: str) -> None:
    if 2 * k > n:
        raise SymbreakError(
            f"--top {k} is larger than the {scope} population allows: {n} token ids, and the "
            f"two ends need 2 x {k}; lower --top"
            + (" or --min-count, or analyse more tokens" if scope == "context" else "")
        )


def choose_top(requested: int | None, n: int, scope: str) -> dict[str, Any]:
    """K of one scope with ``n`` token ids, and why: an explicit ``--top`` must fit (2 K <= n);
    without it, :func:`~symbreak.analysis.options.auto_top` (50, or n // 5 below 250 ids)."""
    if requested is not None:
        _check_top(requested, n, scope)
        return {"k": requested, "population": n, "rule": f"--top {requested}"}
    k = auto_top(n)
    if 2 * k > n:
        raise SymbreakError(
            f"the {scope} population has {n} token ids, too few to compare two ends of "
            f"{MIN_AUTO_TOP} (at least {2 * MIN_AUTO_TOP} are needed)"
            + ("; lower --min-count or analyse more tokens" if scope == "context" else "")
        )
    if k == DEFAULT_TOP:
        return {"k": k, "population": n, "rule": "default"}
    return {
        "k": k,
        "population": n,
        "rule": f"a fifth of the {n} token ids: the default {DEFAULT_TOP} needs at least "
        f"{5 * DEFAULT_TOP} (each end at most 20% of the population)",
    }


def analyze_scope(
    s: ScopeInput,
    classes: dict[str, list[int]],
    direction: Direction,
    null_dirs: torch.Tensor,
    opts: Options,
    tokenizer: Tokenizer | None = None,
) -> list[dict[str, Any]]:
    """Head entries of one scope (``q_value`` filled by :func:`_fill_qvalues`); token strings
    decoded with ``tokenizer`` (None: GPT-2 BPE)."""
    n, k = int(s.population.numel()), s.top
    _check_top(k, n, s.name)
    member = enr.membership(classes, s.population)  # (C, N)
    names = list(classes)
    n_class = member.sum(1)  # (C,)
    tested = [i for i, c in enumerate(n_class.tolist()) if c > 0]
    gen = torch.Generator().manual_seed(keyed_seed(opts.seed, "permutations", s.name))
    null_top, null_bottom = enr.permutation_null(member, k, opts.permutations, gen)
    d = direction.vectors.shape[-1]
    pop_counts = s.counts[s.population]
    entries: list[dict[str, Any]] = []
    for li, layer in enumerate(s.layers):
        keys = s.keys[li]  # (N, H, d)
        dirs = direction.vectors[layer]  # (H, d)
        bonus = key_bonus(keys, dirs)  # (H, N)
        if s.cos is None:
            unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            cos = torch.einsum("nhd,hd->hn", keys, unit)
            cos = cos / keys.norm(dim=-1).T.clamp_min(1e-300)
        else:
            cos = s.cos[li].T
        top, bottom = enr.end_indices(bonus, k)
        stats = {}
        for end, idx, null in (("amplified", top, null_top), ("suppressed", bottom, null_bottom)):
            obs = enr.end_counts(member, idx)  # (H, C)
            stats[end] = {
                "obs": obs,
                "p": enr.permutation_pvalues(obs, null),
                "p_exact": enr.exact_pvalues(obs, n_class, n, k),
                "log2": enr.log2_enrichment(obs, n_class, n, k),
            }
        selectivity = bonus.std(dim=1, correction=0)  # (H,)
        for h in range(bonus.shape[0]):
            # null: the same statistics for random directions of the same norm
            rb = torch.einsum("nd,rd->rn", keys[:, h], null_dirs[layer, h]) / math.sqrt(d)
            null_sel = rb.std(dim=1, correction=0)
            ratio_pct = {}
            for end, largest in (("amplified", True), ("suppressed", False)):
                ridx = rb.topk(k, dim=1, largest=largest).indices  # (R, K)
                r_ratio = _max_ratio(enr.end_counts(member, ridx), n_class, n, k, tested)
                o_ratio = _max_ratio(stats[end]["obs"][h : h + 1], n_class, n, k, tested)
                ratio_pct[end] = _f(enr.percentile(o_ratio, r_ratio)[0])
            entry: dict[str, Any] = {
                "layer": layer,
                "head": h,
                "scope": s.name,
                "selectivity": _f(selectivity[h]),
                "null_percentile": _f(enr.percentile(selectivity[h], null_sel)),
                "null_selectivity_mean": _f(null_sel.mean()),
                "enrichment_null_percentile": ratio_pct,
                "mean_bonus": _f(bonus[h].mean()),
                "top_tokens": _tokens(
                    top[h], s.population, bonus[h], cos[h], pop_counts, tokenizer
                ),
                "bottom_tokens": _tokens(
                    bottom[h], s.population, bonus[h], cos[h], pop_counts, tokenizer
                ),
                "enrichment": [
                    {
                        "class": names[c],
                        "end": end,
                        "log2_enrichment": _f(stats[end]["log2"][h, c]),
                        "p_value": _f(stats[end]["p_exact"][h, c]),
                        "p_permutation": _f(stats[end]["p"][h, c]),
                        "q_value": None,
                        "n_in_end": int(stats[end]["obs"][h, c]),
                        "n_in_population": int(n_class[c]),
                    }
                    for end in ENDS
                    for c in tested
                ],
            }
            entries.append(entry)
    return entries


def _max_ratio(
    counts: torch.Tensor, n_class: torch.Tensor, n: int, k: int, tested: list[int]
) -> torch.Tensor:
    """Strongest enrichment ratio ``max_c (a_c/K)/(n_c/N)`` over tested classes (..., C)."""
    ratio = (counts[..., tested] / k) / (n_class[tested] / n)
    return ratio.max(-1).values


def _tokens(
    idx: torch.Tensor,
    population: torch.Tensor,
    bonus: torch.Tensor,
    cos: torch.Tensor,
    counts: torch.Tensor,
    tokenizer: Tokenizer | None = None,
) -> list[dict[str, Any]]:
    return [
        {
            "token": token_string(int(population[j]), tokenizer),
            "id": int(population[j]),
            "bonus": _f(bonus[j]),
            "cosine": _f(cos[j]),
            "count": int(counts[j]),
        }
        for j in idx.tolist()
    ]


def _fill_qvalues(entries: list[dict[str, Any]], alpha: float) -> None:
    """BH over every (head, class, end) of the given entries (one scope of one model), on the
    exact p-values (``p_value``: the hypergeometric tail, not the Monte Carlo ``p_permutation``,
    whose floor 1/(P+1) would cap every q near m/(P+1)), then each entry's ``strongest``
    significant class per end."""
    rows = [e for entry in entries for e in entry["enrichment"]]
    if rows:
        q = enr.bh_qvalues(torch.tensor([r["p_value"] for r in rows], dtype=torch.float64))
        for r, qv in zip(rows, q.tolist(), strict=True):
            r["q_value"] = _f(qv)
    for entry in entries:
        entry["strongest"] = {end: strongest(entry, end, alpha) for end in ENDS}


def strongest(entry: dict[str, Any], end: str, alpha: float) -> dict[str, Any] | None:
    """The significant (q < alpha) class with the largest log2 enrichment in one end of a
    head (ties: smaller q, then class order), or None."""
    sig = [
        r
        for r in entry["enrichment"]
        if r["end"] == end
        and r["q_value"] is not None
        and r["q_value"] < alpha
        and r["log2_enrichment"] is not None
    ]
    if not sig:
        return None
    best = max(enumerate(sig), key=lambda ir: (ir[1]["log2_enrichment"], -ir[1]["q_value"], -ir[0]))
    r = best[1]
    return {"class": r["class"], "log2_enrichment": r["log2_enrichment"], "q_value": r["q_value"]}


# --------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------


def populations(
    tokens: torch.Tensor, vocab_size: int, opts: Options, tokenizer: Tokenizer | None = None
) -> tuple[int, torch.Tensor]:
    """Check the options against the tokens before any model work: the vocab population size
    (the tokenizer's real ids, GPT-2's when ``tokenizer`` is None, never the padding rows) and
    the context population (ids seen at least ``min_count`` times)."""
    opts.check()
    if tokens.numel() == 0:
        raise DataError("no tokens to analyse")
    if int(tokens.max()) >= vocab_size:
        raise DataError(
            f"token id {int(tokens.max())} is past the model's vocabulary ({vocab_size})"
        )
    n_real = GPT2_VOCAB_SIZE if tokenizer is None else tokenizer.vocab_size
    n_vocab = min(n_real, vocab_size)
    counts = torch.bincount(tokens, minlength=vocab_size)
    ctx_pop = torch.nonzero(counts[:n_vocab] >= opts.min_count).flatten()
    top_used(n_vocab, int(ctx_pop.numel()), opts)
    return n_vocab, ctx_pop


def top_used(n_vocab: int, n_context: int, opts: Options) -> dict[str, dict[str, Any]]:
    """``{scope: {k, population, rule}}``: the K each scope uses (:func:`choose_top`)."""
    return {
        "vocab": choose_top(opts.top, n_vocab, "vocab"),
        "context": choose_top(opts.top, n_context, "context"),
    }


def analyze_model(
    model: GPT,
    tokens: torch.Tensor,
    opts: Options,
    progress: Progress | None = None,
    tokenizer: Tokenizer | None = None,
) -> dict[str, Any]:
    """Both scopes of one model on ``tokens`` (1-D): direction, classes, heads, profiles, and
    ``top_used`` (the K of each scope, :func:`top_used`).

    ``tokenizer`` (None: GPT-2 BPE) gives the real ids, the token strings and the class set
    (classes.py). ``progress(message)``, when given, hears about each phase (for a long 124m
    analysis)."""
    say = progress or (lambda _msg: None)
    model.eval()
    vocab_size = model.cfg.vocab_size
    n_vocab, ctx_pop = populations(tokens, vocab_size, opts, tokenizer)
    tops = top_used(n_vocab, int(ctx_pop.numel()), opts)
    directions = probe_directions(model)
    n_layer, _, d = directions[0].vectors.shape
    counts = torch.bincount(tokens, minlength=vocab_size)[:vocab_size]
    classes = classify_vocab(counts, n_vocab, tokenizer)

    # vocab scope: layer 0, every real token id
    vocab_pop = torch.arange(n_vocab)
    say(f"vocabulary keys of {n_vocab:,} token ids (layer 0)")
    vkeys = vocab_keys(model, vocab_pop, opts.vocab_positions).to(torch.float64)
    vocab = ScopeInput("vocab", [0], vocab_pop, vkeys[None], None, counts, tops["vocab"]["k"])

    ws = windows(tokens, model.cfg.block_size)
    dev = model.wte.weight.device
    ctx = autocast(dev, resolve_dtype(opts.dtype, dev))
    heads: list[dict[str, Any]] = []
    for direction in directions:
        # the same null directions for every component (seeded alike), scaled to its norm
        null_dirs = random_directions(direction.norms, opts.null_directions, d, opts.seed)
        label = "" if direction.component is None else f" (component {direction.component})"
        # context scope: every layer, ids seen at least min_count times
        say(f"in-context keys{label}: {tokens.numel():,} tokens in {len(ws)} windows, every layer")
        cs = context_stats(model, ws, direction.vectors, ctx_pop, counts, ctx=ctx)
        context = ScopeInput(
            "context",
            list(range(n_layer)),
            ctx_pop,
            cs.mean_keys(),
            cs.mean_cos(),
            counts,
            tops["context"]["k"],
        )
        for scope in (vocab, context):
            say(
                f"{scope.name}{label}: enrichment, K = {scope.top}, {opts.permutations} "
                "permutations, nulls"
            )
            entries = analyze_scope(scope, classes, direction, null_dirs, opts, tokenizer)
            _fill_qvalues(entries, opts.alpha)  # one family per scope and direction
            for e in entries:
                if direction.component is not None:
                    e["component"] = direction.component
                if e["scope"] == "context":
                    e["position_profile"] = [_f(x) for x in cs.pos_bonus[e["layer"], e["head"]]]
            heads += entries
    direction = directions[-1]  # the mean direction (the only one with one component)
    return {
        "direction": {
            "source": direction.source,
            "per_head": bool(model.sb.per_head and model.sb.q),
            **({"zero_mean": True} if direction.zero_mean else {}),
            **(
                {"components": [_direction_json(c, n_layer) for c in directions[:-1]]}
                if len(directions) > 1
                else {}
            ),
            "layers": [
                {
                    "layer": layer,
                    "heads": [
                        {
                            "head": h,
                            "norm": _f(direction.norms[layer, h]),
                            "vector": [_f(x) for x in direction.vectors[layer, h]],
                        }
                        for h in range(direction.vectors.shape[1])
                    ],
                }
                for layer in range(n_layer)
            ],
        },
        "scopes": {
            "vocab": {
                "layers": [0],
                "population": n_vocab,
                "positions": opts.vocab_positions,
                "note": "layer-0 keys k_t = W_K LN_1(e_t) + c_K of each token id alone; "
                + (
                    "position is left out"
                    if opts.vocab_positions == "none"
                    else "the mean position embedding is added to e_t"
                ),
            },
            "context": {
                "layers": list(range(n_layer)),
                "tokens": cs.n_tokens,
                "windows": len(ws),
                "population": int(ctx_pop.numel()),
                "min_count": opts.min_count,
                "dtype": opts.dtype,
                "note": "keys captured inside attention during an eval-mode forward; per token "
                "id, the mean key over its occurrences",
            },
        },
        "classes": classes,
        "heads": heads,
        "top_used": tops,
    }


def _direction_json(direction: Direction, n_layer: int) -> dict[str, Any]:
    """One component's direction, as ``direction.layers`` writes the mean's."""
    return {
        "component": direction.component,
        "source": direction.source,
        "layers": [
            {
                "layer": layer,
                "heads": [
                    {
                        "head": h,
                        "norm": _f(direction.norms[layer, h]),
                        "vector": [_f(x) for x in direction.vectors[layer, h]],
                    }
                    for h in range(direction.vectors.shape[1])
                ],
            }
            for layer in range(n_layer)
        ],
    }


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")


def check_same_shape(run: Run, baseline: Run) -> None:
    """A baseline must be a different run of the analysed run's model shape whose Q-K sector is
    symmetric (no bQ: bV acts on the V-O sector, bK on nothing), or the comparison means
    nothing."""
    if Path(baseline.run_dir).resolve() == Path(run.run_dir).resolve():
        raise SymbreakError(
            f"--baseline {baseline.run_dir} is the analysed run itself; pass a symmetric run"
        )
    if baseline.cfg.sb.q:
        raise SymbreakError(
            f"--baseline {baseline.run_dir} has bQ (sb.q=true), which breaks the Q-K symmetry "
            "the baseline stands for; pass a run trained with sb.q=false"
        )
    for key in SHAPE_KEYS:
        a, b = getattr(run.cfg.model, key), getattr(baseline.cfg.model, key)
        if a != b:
            raise SymbreakError(
                f"--baseline {baseline.run_dir} has model.{key}={b} but {run.run_dir} has "
                f"{a}; the baseline must be the same model shape"
            )


def analyze_run(
    run: Run,
    tokens: torch.Tensor,
    opts: Options,
    text_source: str,
    baseline: Run | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole analysis.json of a run (and of its symmetric ``baseline``, on the same
    tokens, probed with the vector its bQ would have had), token strings and classes from the
    run's own tokenizer (:attr:`symbreak.runs.Run.tokenizer`). The analysis of ``symbreak
    analyze``; :func:`symbreak.analysis.output.write_outputs` writes the JSON, figures and
    report.html.

    >>> from symbreak.analysis import Options, analyze_run
    >>> from symbreak.analysis.text import validation_tokens
    >>> from symbreak.runs import load_run
    >>> run = load_run("runs/bq", "latest")  # doctest: +SKIP
    >>> tokens = validation_tokens(run.cfg, 8192)  # doctest: +SKIP
    >>> result = analyze_run(run, tokens, Options(permutations=200), "validation")  # doctest: +SKIP
    >>> result["scopes"].keys()  # doctest: +SKIP
    """
    if baseline is not None:
        check_same_shape(run, baseline)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "symbreak_version": __version__,
        "provenance": provenance(str(run.device)),
        "run": {"name": run.name, "dir": str(run.run_dir)},
        "checkpoint": {"name": run.checkpoint.name, "step": run.step},
        "options": {**asdict(opts), "text": text_source},
    }
    tokenizer = run.tokenizer
    analysed = analyze_model(run.model, tokens, opts, progress, tokenizer)
    result["options"]["top_used"] = analysed.pop("top_used")
    result.update(analysed)
    result["baseline"] = None
    if baseline is not None:
        if progress is not None:
            progress(f"baseline {baseline.run_dir}")
        base = analyze_model(baseline.model, tokens, opts, progress, tokenizer)
        result["baseline"] = {
            "run": {"name": baseline.name, "dir": str(baseline.run_dir)},
            "checkpoint": {"name": baseline.checkpoint.name, "step": baseline.step},
            "direction": base["direction"],
            "scopes": base["scopes"],
            "heads": base["heads"],
        }
    return result
