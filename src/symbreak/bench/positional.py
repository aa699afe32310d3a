"""What each position encoding costs: training steps timed side by side, ratios to NoPE.

``symbreak bench positional [--steps N] [--json] [KEY=VALUE ...]`` builds one model
per ``model.pos_encoding`` (same config otherwise, overrides as for ``symbreak train``) and
times a forward + backward of one micro-batch of random tokens for each, in interleaved rounds
(the order rotating every round) so that a shared machine's drift hits them alike. It reports
the median and the fastest step time of each and their ratios to ``none`` (on a machine shared
with other jobs the fastest of many rounds is the steadier figure). ``learned``,
``sinusoidal``, ``rope`` and ``none`` keep the fused attention kernel (``is_causal=True`` or
no mask); ``alibi`` passes an explicit ``(n_head, T, T)`` bias, which the flash kernels do not
take, so SDPA falls back to a slower one: the ratio shows by how much.

From Python::

    from symbreak.bench.positional import bench_positional, format_table

    print(format_table(bench_positional(["model.preset=tiny"], steps=5)))
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from symbreak.bench import POSITIONAL_STEPS, POSITIONAL_WARMUP
from symbreak.data import load_config
from symbreak.data.loader import input_targets, run_loss_positions
from symbreak.device import autocast, resolve_device, resolve_dtype
from symbreak.model import GPT
from symbreak.model.positional import POS_ENCODINGS


def bench_positional(
    overrides: Sequence[str] = (),
    steps: int = POSITIONAL_STEPS,
    warmup: int = POSITIONAL_WARMUP,
) -> dict[str, Any]:
    """Median forward+backward milliseconds per encoding and the ratio to ``none``."""
    base = load_config(None, list(overrides))
    dev = resolve_device(base.train.device)
    amp = resolve_dtype(base.train.dtype, dev)
    micro = base.train.micro_batch_size or base.train.batch_size
    T = base.model.block_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, min(base.model.vocab_size, 50257), (micro, T + 1), generator=gen)
    # the targets training would use (with the bidirectional mask: the last position only)
    x, y = input_targets(x, run_loss_positions(base))
    x, y = x.to(dev), y.to(dev)
    models = {}
    for pe in POS_ENCODINGS:
        cfg = load_config(None, [*overrides, f"model.pos_encoding={pe}"])
        torch.manual_seed(0)
        models[pe] = GPT(cfg.model, cfg.sb).to(dev).train()

    def step(model: GPT) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with autocast(dev, amp):
            _, loss = model(x, y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {pe: [] for pe in models}
    order = list(models)
    for r in range(warmup + steps):
        for pe in order[r % len(order) :] + order[: r % len(order)]:
            dt = step(models[pe])
            if r >= warmup:
                times[pe].append(dt)
    med = {pe: statistics.median(ts) * 1e3 for pe, ts in times.items()}
    fastest = {pe: min(ts) * 1e3 for pe, ts in times.items()}
    m = base.model
    return {
        "device": str(dev),
        "dtype": str(amp).removeprefix("torch."),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_embd": m.n_embd,
        "block_size": T,
        "mask": m.mask,
        "micro_batch_size": micro,
        "steps": steps,
        "step_ms": med,
        "ratio_to_none": {pe: med[pe] / med["none"] for pe in med},
        "step_ms_min": fastest,
        "min_ratio_to_none": {pe: fastest[pe] / fastest["none"] for pe in fastest},
    }


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"forward+backward of {r['micro_batch_size']} x {r['block_size']} tokens, "
        f"L{r['n_layer']} H{r['n_head']} C{r['n_embd']}, mask {r['mask']}, {r['device']} "
        f"{r['dtype']}, median of {r['steps']} interleaved rounds",
        f"{'pos_encoding':<14}{'median ms':>10}{'/ none':>8}{'min ms':>10}{'/ none':>8}",
    ]
    for pe, ms in r["step_ms"].items():
        lines.append(
            f"{pe:<14}{ms:>10.2f}{r['ratio_to_none'][pe]:>8.3f}"
            f"{r['step_ms_min'][pe]:>10.2f}{r['min_ratio_to_none'][pe]:>8.3f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("run `symbreak bench positional` (same options; --help lists them)")
