"""``symbreak eval --task cot-arithmetic``: greedy chains of thought, scored by exact match.

For each held-out problem (the test split of the run's ``data.cot_*`` settings, or of the
defaults for a run that was not fine-tuned) the model gets the prompt (after ``shots``
training examples, when asked) and writes greedily until it has written a whole
``Answer: ...`` line, or until its type's token limit (1.5 x the longest reference chain of
that type + 8), or the context, runs out. The answer is the integer on the first ``Answer:``
line (:func:`~symbreak.data.cot.extract_answer`); an item is right when it equals the
problem's answer. No answer line: wrong.

Generation is batched without a KV cache (the model has none): each step runs the trunk over
the batch's longest live prefix and computes logits only at each row's last position, rows
right-padded so that every row keeps its own positions; finished rows leave the batch. Items
are sorted by prompt length so a batch's prefixes are about equally long.

Reported: exact match per type and overall with Wilson 95% intervals, and the teacher-forced
log-probability of the reference completion (chain + answer line), the smooth companion:
``sum_t log p(y_t | prompt, y_<t)`` per item, mean per type with a seeded bootstrap 95%
interval, and per token. Every item's prompt, generated text, extracted answer and verdict
go into the JSON.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from symbreak.config import Config, DataConfig
from symbreak.data import cot_spec
from symbreak.data.cot import (
    KINDS,
    SOURCE,
    CotItem,
    answer_complete,
    check_vocabulary,
    extract_answer,
    generate_split,
)
from symbreak.data.tokenizer import Tokenizer
from symbreak.errors import SymbreakError
from symbreak.stats import bootstrap_ci, wilson_interval


def task_data(cfg: Config) -> DataConfig:
    """The ``data.cot_*`` settings to score a run with: its own for a fine-tuned run, the
    defaults otherwise (the same test problems every default fine-tuning run holds out)."""
    return cfg.data if cfg.data.source == SOURCE else DataConfig()


def test_items(data: DataConfig, n: int | None = None) -> list[CotItem]:
    items = generate_split(cot_spec(data), "test")
    if n is not None:
        if n > len(items):
            raise SymbreakError(
                f"--problems {n} is more than the {len(items)} test problems (data.cot_test)"
            )
        items = items[:n]
    return items


def _newline_ids(tok: Tokenizer, vocab: int) -> torch.Tensor:
    """(vocab,) bool: ids whose text holds a newline (an answer line can only end there)."""
    out = torch.zeros(vocab, dtype=torch.bool)
    for i in range(min(vocab, tok.vocab_size)):
        if "\n" in tok.decode([i]):
            out[i] = True
    return out


@torch.no_grad()
def greedy_chains(
    model: torch.nn.Module,
    tok: Tokenizer,
    prompts: Sequence[list[int]],
    max_new: int | Sequence[int],
    batch_size: int = 64,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (token ids), each stopping after a whole answer
    line, after ``max_new`` tokens (one number, or one per prompt) or at the context's end.
    Argmax over the tokenizer's real ids (a padded vocabulary's extra rows are never chosen)."""
    limits = [max_new] * len(prompts) if isinstance(max_new, int) else list(max_new)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block = model.cfg.block_size
    real = min(tok.vocab_size, model.cfg.vocab_size)
    newline = _newline_ids(tok, model.cfg.vocab_size).to(device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    try:
        for b0 in range(0, len(order), batch_size):
            rows = order[b0 : b0 + batch_size]
            lens = torch.tensor([len(prompts[i]) for i in rows], device=device)
            if int(lens.max()) >= block:
                raise SymbreakError(
                    f"a prompt of {int(lens.max())} tokens leaves no room in model.block_size="
                    f"{block}; use fewer --shots"
                )
            limit = torch.tensor([limits[i] for i in rows], device=device)
            width = min(block, int((lens + limit).max()))
            buf = torch.zeros(len(rows), width, dtype=torch.long, device=device)
            for r, i in enumerate(rows):
                buf[r, : len(prompts[i])] = torch.tensor(prompts[i], dtype=torch.long)
            start = lens.clone()
            live = torch.arange(len(rows), device=device)
            while live.numel():
                cur = lens[live]
                h = model.hidden(buf[live, : int(cur.max())])
                last = h[torch.arange(live.numel(), device=device), cur - 1]
                nxt = model.output(last)[:, :real].argmax(-1)
                buf[live, cur] = nxt
                lens[live] = cur + 1
                done = (lens[live] >= width) | (lens[live] - start[live] >= limit[live])
                for k in torch.nonzero(newline[nxt] & ~done).flatten().tolist():
                    r = int(live[k])
                    text = tok.decode(buf[r, int(start[r]) : int(lens[r])].tolist())
                    done[k] = answer_complete(text)
                live = live[~done]
            for r, i in enumerate(rows):
                out[i] = buf[r, int(start[r]) : int(lens[r])].tolist()
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def completion_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """Teacher-forced ``(sum_t log p(c_t | prompt, c_<t), len(c))`` per item, in float32
    log-softmax over the whole vocabulary."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    try:
        for b0 in range(0, len(prompts), batch_size):
            ps, cs = prompts[b0 : b0 + batch_size], completions[b0 : b0 + batch_size]
            seqs = [p + c for p, c in zip(ps, cs, strict=True)]
            width = max(map(len, seqs))
            x = torch.zeros(len(seqs), width, dtype=torch.long)
            for r, s in enumerate(seqs):
                x[r, : len(s)] = torch.tensor(s)
            h = model.hidden(x.to(device))
            for r, (p, c) in enumerate(zip(ps, cs, strict=True)):
                pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)
                logp = torch.log_softmax(model.output(h[r, pos]).float(), dim=-1)
                tgt = torch.tensor(c, device=device)
                out.append((float(logp[torch.arange(len(c)), tgt].sum()), len(c)))
    finally:
        model.train(was_training)
    return out


def rate(hits: Sequence[bool]) -> dict[str, float | int]:
    n = len(hits)
    k = float(sum(hits))
    lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
    return {"mean": k / n if n else float("nan"), "lo": lo, "hi": hi, "n": n}


def _mean_ci(values: Sequence[float], key: str) -> dict[str, float | int]:
    x = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(x, seed=hash_key(key)) if len(x) >= 5 else (float("nan"),) * 2
    return {"mean": float(x.mean()) if len(x) else float("nan"), "lo": lo, "hi": hi, "n": len(x)}


def hash_key(text: str) -> int:
    from symbreak.seeding import keyed_seed

    return keyed_seed("cot-bootstrap", text) % 2**32


def evaluate_cot(
    model: torch.nn.Module,
    cfg: Config,
    tok: Tokenizer,
    n_problems: int | None = None,
    batch_size: int = 64,
    shots: int = 0,
    max_new: int | None = None,
) -> dict[str, Any]:
    """Exact match per type and overall, chain log-probabilities and every item (JSON-ready)."""
    if cfg.model.mask != "causal":
        raise SymbreakError(f"--task {SOURCE} generates left to right: it needs a causal model")
    check_vocabulary(tok, "this run")
    data = task_data(cfg)
    items = test_items(data, n_problems)
    prefix = ""
    if shots:
        spec = cot_spec(data)
        prefix = "".join(i.text + "\n" for i in generate_split(spec, "train")[:shots])
    prompts = [tok.encode(prefix + i.prompt) for i in items]
    completions = [tok.encode(i.completion) for i in items]
    # per type: 1.5 x its longest reference completion + 8 tokens, so a model that never
    # writes an answer line costs no more than a chain of that type could
    per_kind = {
        k: int(1.5 * max(len(c) for i, c in zip(items, completions, strict=True) if i.kind == k))
        + 8
        for k in {i.kind for i in items}
    }
    limits = [max_new or per_kind[i.kind] for i in items]
    t0 = time.perf_counter()
    generated = greedy_chains(model, tok, prompts, limits, batch_size)
    gen_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    logps = completion_logprobs(model, prompts, completions)
    lp_s = time.perf_counter() - t1
    rows = []
    for item, g, (lp, n_tok) in zip(items, generated, logps, strict=True):
        text = tok.decode(g)
        got = extract_answer(text)
        rows.append(
            {
                "kind": item.kind,
                "prompt": item.prompt,
                "expected": item.answer,
                "generated": text,
                "answer": got,
                "correct": got == item.answer,
                "chain_logprob": lp,
                "chain_tokens": n_tok,
            }
        )
    by_kind = {k: [r for r in rows if r["kind"] == k] for k in KINDS}
    acc = {k: rate([r["correct"] for r in rs]) for k, rs in by_kind.items() if rs}
    acc["overall"] = rate([r["correct"] for r in rows])
    logprob = {k: _mean_ci([r["chain_logprob"] for r in rs], k) for k, rs in by_kind.items() if rs}
    logprob["overall"] = _mean_ci([r["chain_logprob"] for r in rows], "overall")
    tokens = sum(r["chain_tokens"] for r in rows)
    return {
        "task": SOURCE,
        "problems": len(rows),
        "data": {
            "cot_test": data.cot_test,
            "cot_mix": list(data.cot_mix),
            "cot_seed": data.cot_seed,
            "from": "the run's data.cot_*" if cfg.data.source == SOURCE else "the defaults",
        },
        "shots": shots,
        "max_new_tokens": {k: max_new or v for k, v in sorted(per_kind.items())},
        "accuracy": acc,
        "chain_logprob": logprob,
        "chain_nll_per_token": -sum(r["chain_logprob"] for r in rows) / max(tokens, 1),
        "throughput": {
            "generation_s": gen_s,
            "problems_per_s": len(rows) / max(gen_s, 1e-9),
            "generated_tokens": sum(len(g) for g in generated),
            "generated_tokens_per_s": sum(len(g) for g in generated) / max(gen_s, 1e-9),
            "logprob_s": lp_s,
        },
        "method": "greedy decoding (argmax over the tokenizer's ids) until a whole 'Answer:' "
        "line, max_new_tokens (per type) or the context's end; batched, no KV cache (the "
        "trunk re-runs over the live prefix each step); answer = the integer on the first "
        "'Answer:' line; "
        "exact match with 95% Wilson intervals; chain_logprob = teacher-forced sum of log p "
        "of the reference chain and answer line, mean with a seeded bootstrap 95% interval",
        "items": rows,
    }


def format_cot(result: dict[str, Any]) -> str:
    def row(name: str, r: dict, lp: dict) -> str:
        return (
            f"{name:<8} {r['n']:>5} {r['mean']:>7.3f}  [{r['lo']:.3f}, {r['hi']:.3f}]  "
            f"{lp['mean']:>9.2f}"
        )

    t = result["throughput"]
    lines = [
        f"{SOURCE}: {result['problems']} held-out problems"
        + (f", {result['shots']}-shot" if result["shots"] else ""),
        f"{'type':<8} {'n':>5} {'exact':>7}  95% Wilson      chain logp",
    ]
    acc, lp = result["accuracy"], result["chain_logprob"]
    lines += [row(k, acc[k], lp[k]) for k in (*KINDS, "overall") if k in acc]
    lines.append(
        f"generation: {t['problems_per_s']:.1f} problems/s, {t['generated_tokens_per_s']:,.0f} "
        f"tokens/s ({t['generation_s']:.1f} s)"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Two runs on the same items
# --------------------------------------------------------------------------------------------


def paired_items(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[dict, dict]]:
    """The items both results scored (matched by type and prompt), in ``a``'s order."""
    index = {(r["kind"], r["prompt"]): r for r in b["items"]}
    pairs = [
        (r, index[(r["kind"], r["prompt"])])
        for r in a["items"]
        if (r["kind"], r["prompt"]) in index
    ]
    if not pairs:
        raise SymbreakError(
            "the two results share no problem (different data.cot_* settings?); score both "
            "on the same test problems"
        )
    return pairs


def compare_cot(a: dict[str, Any], b: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """B minus A on the items both scored, per type and overall: the accuracy difference with
    a paired bootstrap 95% interval over items, McNemar's exact test on the discordant items,
    and the paired difference of the chain log-probability."""
    from symbreak.stats import mcnemar_exact, paired_bootstrap_diff

    pairs = paired_items(a, b)
    out: dict[str, Any] = {}
    for kind in (*KINDS, "overall"):
        ps = [(x, y) for x, y in pairs if kind == "overall" or x["kind"] == kind]
        if not ps:
            continue
        ra = [bool(x["correct"]) for x, _ in ps]
        rb = [bool(y["correct"]) for _, y in ps]
        acc = paired_bootstrap_diff(rb, ra, seed=hash_key(f"acc-{kind}") + seed)
        lp = paired_bootstrap_diff(
            [y["chain_logprob"] for _, y in ps],
            [x["chain_logprob"] for x, _ in ps],
            seed=hash_key(f"logp-{kind}") + seed,
        )
        out[kind] = {
            "n": len(ps),
            "accuracy_a": rate(ra),
            "accuracy_b": rate(rb),
            "accuracy_diff": acc.to_json(),
            "mcnemar": mcnemar_exact(rb, ra),
            "chain_logprob_diff": lp.to_json(),
        }
    return out


def format_compare_cot(names: list[str], table: dict[str, Any]) -> str:
    a, b = names
    lines = [
        f"{SOURCE}: {b} - {a}, paired over the same problems",
        f"{'type':<8} {'n':>5} {a[:10]:>10} {b[:10]:>10} {'diff':>7}  paired bootstrap 95%   "
        "McNemar p",
    ]
    for kind, r in table.items():
        d = r["accuracy_diff"]
        lines.append(
            f"{kind:<8} {r['n']:>5} {r['accuracy_a']['mean']:>10.3f} "
            f"{r['accuracy_b']['mean']:>10.3f} {d['mean']:>+7.3f}  "
            f"[{d['lo']:+.3f}, {d['hi']:+.3f}]      {r['mcnemar']['p']:.3g}"
        )
    return "\n".join(lines)
