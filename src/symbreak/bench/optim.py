"""``symbreak bench optim``: the cost of one ``optimizer.step()`` and the size of its state.

AdamW, SGDM, SOAP and ECD are built by :func:`symbreak.optim.build_optimizer` with their paper
defaults over the parameters of a preset's GPT (float32), and only ``step()`` is timed.

Why it is done this way:

* Gradients are random (fixed seed) and copied into ``.grad`` before every step, untimed, as a
  backward pass would write them. The copy also undoes SGD's Nesterov update, which adds the
  momentum into ``.grad`` in place (left alone, the gradients would grow without bound).
* All optimizers act on ONE set of parameters, each with its own state: what values the
  parameters drift to does not change the cost of a step, and a model copy per optimizer would
  cost 1 GB each at 124m (parameters + gradients).
* Rounds are interleaved: one step of every optimizer per round, the order rotating from round
  to round, so that the drift of a shared, noisy machine hits all alike. Ratios to AdamW are
  ratios of medians measured in the same run; absolute milliseconds are only indicative.
* SOAP sets up its eigenbases on its first call (which does not update the parameters) and
  refreshes them (a QR power iteration) on calls 11, 21, ... (every ``precondition_frequency``
  = 10 steps). Warm-up >= 1 keeps the set-up out of the figures, and a measured window of a
  multiple of 10 steps holds exactly steps/10 refreshes (``soap_refreshes``): the mean is then
  SOAP's amortised cost, the median its cost between refreshes.
* ECD is given ``loss=5.0``, above its paper ``F0 = 2``, so that it never freezes.
* AdamW is symbreak's (torch's fused kernel); with ``adamw`` in the list torch's foreach AdamW
  is timed too (``adamw_foreach``), so ``adamw_fused_over_foreach`` shows what the fused kernel
  buys and every ``*_over_adamw`` is against the faster of the two.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from symbreak.bench import DEFAULT_PRESET, DEFAULT_STEPS, DEFAULT_WARMUP, OPTIMIZERS
from symbreak.data import load_config
from symbreak.device import resolve_device
from symbreak.errors import ConfigError
from symbreak.model import GPT
from symbreak.optim import build_optimizer, optimizer_step, state_bytes

FOREACH = "adamw_foreach"  # torch's AdamW on the foreach path, timed beside the fused one
ECD_LOSS = 5.0  # well above ECD's paper F0 = 2.0: V - F0 > 0, so no step freezes
GRAD_STD = 0.01  # size of the random gradients (the cost of a step does not depend on it)


def bench_optim(
    preset: str = DEFAULT_PRESET,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    optimizers: Sequence[str] = OPTIMIZERS,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time ``step()`` of each optimizer on ``preset``'s parameters; a JSON-ready dict.

    ``overrides`` are config overrides (``model.n_layer=1``) applied to the model and to every
    optimizer. Keys: ``preset``, ``params``, ``device``, ``torch``, ``torch_threads``,
    ``steps``, ``warmup``, ``optimizers``, ``<name>_step_ms`` (medians), ``<name>_over_adamw``,
    ``step_ms`` (``{name: {median, min, max, mean}}``), ``state_bytes`` (``{name: bytes}``,
    see :func:`symbreak.optim.state_bytes`), ``ecd_state_over_adamw``, ``soap_refreshes``. Keys that
    need an optimizer left out of ``optimizers`` are absent. ``log`` gets progress lines (a
    124m run with SOAP takes many minutes on a few CPU cores).
    """
    names = _check_names(optimizers)
    if steps < 1 or warmup < 0:
        raise ConfigError(f"bench optim needs steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    dev = resolve_device(device)
    base = [f"model.preset={preset}", *overrides]
    cfg = load_config(overrides=base)
    with torch.random.fork_rng(devices=[]):  # a seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = GPT(cfg.model, cfg.sb).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    fixed = [(GRAD_STD * torch.randn(p.shape, generator=gen)).to(dev) for p in params]
    for p, g in zip(params, fixed, strict=True):
        p.grad = g.clone()
    grads = [p.grad for p in params]
    opts = {
        name: build_optimizer(
            model, load_config(overrides=[*base, f"optim.name={name}"]).optim, seed=seed
        )
        for name in names
    }
    if "adamw" in names:  # the fair baseline: symbreak's AdamW (fused) against torch's foreach
        adamw_cfg = load_config(overrides=[*base, "optim.name=adamw"]).optim
        opts[FOREACH] = build_optimizer(model, adamw_cfg, seed=seed, adamw_fused=False)
        names = [*names, FOREACH]

    n_params = sum(p.numel() for p in model.parameters())
    say = log or (lambda _: None)
    say(
        f"bench optim: {', '.join(names)} on {preset} ({n_params / 1e6:.2f}M parameters, {dev}): "
        f"{warmup} warm-up + {steps} measured rounds"
    )
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    gc.collect()
    gc.disable()  # a collection would land in one random step
    try:
        for r in range(warmup + steps):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                torch._foreach_copy_(grads, fixed)
                ms = _timed_step(opts[name], dev)
                if r >= warmup:
                    times[name].append(ms)
            say(f"round {r + 1}/{warmup + steps} done at {time.perf_counter() - start:.0f} s")
    finally:
        gc.enable()

    median = {name: statistics.median(ts) for name, ts in times.items()}
    state = {name: state_bytes(opt) for name, opt in opts.items()}
    out: dict[str, Any] = {
        "preset": preset,
        "params": n_params,
        "device": str(dev),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "steps": steps,
        "warmup": warmup,
        "optimizers": names,
    }
    out.update({f"{name}_step_ms": median[name] for name in names})
    if "adamw" in names:
        out.update({f"{n}_over_adamw": median[n] / median["adamw"] for n in names if n != "adamw"})
        out["adamw_fused_over_foreach"] = median["adamw"] / median[FOREACH]
    out["step_ms"] = {
        name: {"median": median[name], "min": min(ts), "max": max(ts), "mean": statistics.fmean(ts)}
        for name, ts in times.items()
    }
    out["state_bytes"] = state
    if "adamw" in names and "ecd" in names:
        out["ecd_state_over_adamw"] = state["ecd"] / state["adamw"]
    if "soap" in names:
        every = cfg.optim.precondition_frequency
        window = range(warmup + 1, warmup + steps + 1)  # SOAP's calls, counted from 1
        out["soap_refreshes"] = sum(1 for c in window if c > 1 and (c - 1) % every == 0)
    return out


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`bench_optim`'s result."""
    n = result["params"]
    lines = [
        f"symbreak bench optim: preset {result['preset']}, {n / 1e6:.2f}M parameters (float32), "
        f"{result['device']}, {result['torch_threads']} torch threads, torch {result['torch']}",
        f"median of {result['steps']} steps per optimizer after {result['warmup']} warm-up, "
        "interleaved; × AdamW is a ratio of medians of this run",
        "",
        f"{'optimizer':<14}{'median ms':>11}{'min–max ms':>21}{'mean ms':>10}{'× AdamW':>9}"
        f"{'state MB':>10}{'B/param':>9}",
    ]
    adamw = result.get("adamw_step_ms")
    for name in result["optimizers"]:
        st = result["step_ms"][name]
        ratio = f"{st['median'] / adamw:.2f}" if adamw else "-"
        nbytes = result["state_bytes"][name]
        spread = f"{st['min']:.2f}–{st['max']:.2f}"
        lines.append(
            f"{name:<14}{st['median']:>11.2f}{spread:>21}"
            f"{st['mean']:>10.2f}{ratio:>9}{nbytes / 1e6:>10.1f}{nbytes / n:>9.2f}"
        )
    if "ecd_state_over_adamw" in result:
        lines.append(f"\nECD state / AdamW state = {result['ecd_state_over_adamw']:.3f}")
    if "soap_refreshes" in result:
        lines.append(
            f"SOAP refreshed its eigenbases {result['soap_refreshes']} time(s) in the measured "
            "steps (every 10 steps): the mean includes them, the median does not"
        )
    return "\n".join(lines)


def _check_names(optimizers: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(optimizers))  # dedupe, keep order
    unknown = [n for n in names if n not in OPTIMIZERS]
    if not names or unknown:
        raise ConfigError(
            f"unknown optimizer(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(OPTIMIZERS)}"
        )
    return names


def _timed_step(opt: torch.optim.Optimizer, dev: torch.device) -> float:
    """Milliseconds of one ``opt.step()``; CUDA is synchronised on both sides."""
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    optimizer_step(opt, ECD_LOSS)
    if cuda:
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) * 1e3
