"""``symbreak bench train``: throughput, model FLOPs utilisation and symmetry-breaking overhead.

A full training step (pin the step's bias draws; forward + backward of every micro-batch, with
``train.batch_size / train.micro_batch_size`` gradient accumulation; gradient clipping when
configured; ``optimizer.step()``; ``zero_grad``) is timed for TWO models built from the same
config in the same run:

* the *symmetry-broken* model: ``sb.q=true sb.v=true`` unless the overrides say otherwise;
* the *symmetric* model: the same config with ``sb.q=sb.k=sb.v=false`` (no bias at all).

Why it is done this way:

* Rounds are interleaved (one step of each model per round, the order alternating), so that
  the drift of a shared, noisy machine hits both alike: ``sb_overhead`` is a ratio of medians
  measured side by side. Absolute milliseconds are only indicative.
* Batches are random token ids in ``[0, 50257)`` (GPT-2's vocabulary), made once on the device:
  the cost of a step does not depend on which tokens it sees, and this keeps data loading and
  host-to-device copies out of the step. The loader is measured on its own instead
  (``loader_tok_per_s``) on the installed Shakespeare corpus, and compared with training
  (``loader_over_train``; the loader keeps up comfortably when it is >= 10).
* The MFU denominator is *measured* in the same run, not a datasheet figure: the median rate
  of a large square matmul (2048 on CPU, 4096 on CUDA) in the benchmark's dtype, half of the
  repetitions before the training rounds and half after. On a CPU shared with other jobs a
  datasheet peak would say more about the neighbours than about our code.
* Model FLOPs per token follow PaLM (Chowdhery et al. 2022, "PaLM: Scaling Language Modeling
  with Pathways", Appendix B), the formula nanoGPT's ``estimate_mfu`` uses::

      6 * N + 12 * n_layer * n_embd * block_size

  ``6 N``: 2 FLOPs per multiply-add, forward + backward (x3) for every weight a token meets.
  ``N`` = ``model.num_active_params(non_embedding=True)`` + ``n_embd * vocab_size``: the
  parameters a token meets (for a mixture of experts, ``moe_top_k`` of each layer's experts
  and the router, not the idle experts; the dense model's ``num_params``); the embedding
  *lookups* (wte, wpe) are no matmuls, but our tied output layer is a real (n_embd x vocab)
  matmul, counted once. The second term is the attention scores and their application to v
  (``12 = 2 matmuls x 2 FLOPs x 3``), counted over the full T x T matrix as PaLM does, although
  the causal kernel skips about half of it: MFU stays comparable with published figures.
  Activations, LayerNorm, softmax, the loss and the optimizer are not model FLOPs.
* ``--compare-dense`` (only with ``model.mlp=moe``) adds two dense-MLP models with the
  symmetry-broken model's biases to the interleaved rounds: ``dense_active``, whose one MLP is
  ``moe_top_k`` experts wide (``model.mlp_hidden = moe_top_k x`` the expert width: the same
  active parameters and model FLOPs per token as the mixture), and ``dense``, the ordinary
  dense model of the expert width. Memory per model is ``state_bytes`` (parameters plus
  optimizer state, exact); activations are not split per model on a CPU (``peak_rss_bytes``
  covers the whole process).
* ``--compile`` wraps each model in ``torch.compile``; the first warm-up step of each model
  pays for the compilation (``compile_s``). Keep ``--warmup`` >= 1 with it. Both models share
  ``GPT.forward``'s code, so the one compiled second (the symmetric one) reuses dynamo's and
  Inductor's warm caches and its ``compile_s`` is far lower: read the symmetry-broken model's
  as the cold figure. (Dynamo logs one "recompile" for that second model; that is expected.)

JSON keys (``--json``; all always present, ``null`` where not applicable):

``preset``, ``n_layer``, ``n_head``, ``n_embd``, ``block_size``, ``vocab_size``: the model.
``sb``: ``{"q", "k", "v", "mode"}`` of the symmetry-broken model.
``optimizer``: ``optim.name``. ``batch_size``, ``micro_batch_size``, ``accum_steps``,
``tokens_per_step``: the step. ``device``, ``dtype`` (``fp32``/``bf16``), ``compile`` (bool),
``loss_kernel`` (``eager``/``compiled``: ``train.loss_kernel`` as the trainer would resolve it
for this config's whole run, so ``auto`` benchmarks what ``symbreak train`` would use),
``torch`` (version), ``torch_threads``, ``steps`` (measured rounds), ``warmup`` (untimed).
``mlp``, ``moe_experts``, ``moe_top_k``: the MLP (the expert keys null for a dense one).
``params``: all parameters; ``params_non_embedding``: without wte and wpe; ``params_active``:
the parameters one token meets (``params`` for a dense MLP). ``state_bytes``: parameters plus
optimizer state of the symmetry-broken model.
``flops_formula``: the formula above, as text. ``model_flops_per_token``: its value.
``matmul_size``: n of the n x n peak matmul. ``matmul_peak_flops_per_s``: its median rate.
``matmul_peak_fp32_flops_per_s``: the same in fp32 (measured beside the bf16 one in a bf16 run).
``tok_per_s_per_fp32_gflops``: tok_per_s per fp32 GFLOP/s of that peak, the machine-neutral
speed the paper's code is compared on; ``x_paper_code``: that over the paper's code's
10.9 (measured: docs/performance.md), only for the paper-code configuration (L4 H4 C128,
context 128, batch 8, GPT-2 vocabulary, AdamW), else null.
For the symmetry-broken model, at the top level: ``tok_per_s`` (tokens_per_step / median
step), ``step_ms`` (median), ``step_ms_min``, ``step_ms_max``, ``step_ms_mean``,
``achieved_flops_per_s`` (model_flops_per_token * tok_per_s), ``mfu``
(achieved_flops_per_s / matmul_peak_flops_per_s), ``compile_s`` (null without ``--compile``).
``symmetric``: the same keys (and its own ``model_flops_per_token``, ``params``,
``params_active`` and ``state_bytes``) for the symmetric model. ``dense_active``, ``dense``:
null, or with ``--compare-dense`` the same keys for those models, and ``moe_over_dense_active``,
``moe_over_dense``: the mixture's tok_per_s over theirs (null without ``--compare-dense``).
``sb_overhead``: symmetric tok_per_s / symmetry-broken tok_per_s (> 1: the biases cost time).
``loader_tok_per_s``: ``TrainBatches.micro_batches`` alone;
``loader_over_train``: loader_tok_per_s / tok_per_s. ``peak_rss_bytes``: the process's peak
resident memory (ru_maxrss, whole run: every model, the loader, the matmuls).
``cuda_max_memory_allocated_bytes``: ``torch.cuda.max_memory_allocated`` (null on CPU).
``profile``: null, or ``{"trace": path, "sort_by": ..., "top_ops": [{"name", "self_ms",
"calls"}] x 10}`` with ``--profile``.
``noether``: null, or with ``train.log_noether=true`` the cost of logging the Noether charges
for the symmetry-broken model, timed after each of its measured steps (outside ``step_ms``),
rows written to a temporary ``noether.csv`` as the trainer does: ``{"ms": median ms of one log,
"log_every": train.log_every, "overhead": ms / (log_every * step_ms) (the share of training
time at that log interval), "overhead_every_step": ms / step_ms}``.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from symbreak.bench import TRAIN_STEPS as DEFAULT_STEPS
from symbreak.bench import TRAIN_WARMUP as DEFAULT_WARMUP
from symbreak.config import Config
from symbreak.data import TrainBatches, load_config, load_run_data
from symbreak.device import autocast, resolve_device, resolve_dtype
from symbreak.errors import ConfigError
from symbreak.model import GPT
from symbreak.optim import build_optimizer
from symbreak.optim.factory import state_bytes
from symbreak.train.noether_log import FILENAME as NOETHER_CSV
from symbreak.train.noether_log import NoetherLog
from symbreak.train.step import TrainStep
from symbreak.train.trainer import resolve_loss_kernel

GPT2_VOCAB = 50257  # random ids stay below the real vocabulary, as real tokens do
FLOPS_FORMULA = (
    "6*(params_non_embedding + n_embd*vocab_size) + 12*n_layer*n_embd*block_size "
    "(PaLM, Chowdhery et al. 2022, appendix B; output layer counted as a matmul)"
)
PROFILE_STEPS = 3
LOADER_MIN_S = 0.2  # time the loader at least this long (and at least LOADER_MIN_CALLS calls)
LOADER_MIN_CALLS = 20
MATMUL_REPS = 6  # half before the training rounds, half after
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}
# The paper's code on the paper-code configuration (below): ~1,950 tok/s in fp32 on a machine
# doing 180 GFLOP/s of fp32 matmul (measured on the 2-core CPU, docs/performance.md), i.e.
# tokens/s per fp32 GFLOP/s.
PAPER_CODE_TOK_PER_S_PER_FP32_GFLOPS = 10.9


# (n_layer, n_head, n_embd, block_size, batch_size) of that configuration
PAPER_CODE_SHAPE = (4, 4, 128, 128, 8)


def _is_paper_code_config(cfg: Config) -> bool:
    """L4 H4 C128, context 128, batch 8, the GPT-2 vocabulary, AdamW: the configuration the
    paper's code was timed on, where ``x_paper_code`` means something."""
    m = cfg.model
    shape = (m.n_layer, m.n_head, m.n_embd, m.block_size, cfg.train.batch_size)
    return shape == PAPER_CODE_SHAPE and m.vocab_size >= 50257 and cfg.optim.name == "adamw"


def model_flops_per_token(model: GPT) -> int:
    """PaLM's training FLOPs per token for ``model`` (see the module docstring)."""
    c = model.cfg
    n = model.num_active_params(non_embedding=True) + c.n_embd * c.vocab_size
    return 6 * n + 12 * c.n_layer * c.n_embd * c.block_size


def bench_train(
    overrides: Sequence[str] = (),
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    dtype: str | None = None,
    compile: bool = False,
    profile: str | Path | None = None,
    matmul_size: int | None = None,
    seed: int = 0,
    compare_dense: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time training steps of the symmetry-broken and the symmetric model; a JSON-ready dict.

    ``overrides`` are ``symbreak train``'s config overrides (``model.preset=small``,
    ``train.batch_size=8``, ``train.device=cuda``, ...). ``dtype`` (``fp32``/``bf16``) replaces
    ``train.dtype`` when given; ``compile`` is ORed with ``train.compile``. ``matmul_size``
    changes the peak matmul's n (tests use a small one). ``profile``: write a chrome trace of a
    few steps of the symmetry-broken model there. ``compare_dense``: also time the dense
    models of equal active size and of the expert width (``model.mlp=moe`` only). The keys are
    listed in the module docstring.
    """
    if steps < 1 or warmup < 0:
        raise ConfigError(f"bench train needs steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    say = log or (lambda _: None)
    base = ["sb.q=true", "sb.v=true", *overrides]
    if dtype is not None:
        base.append(f"train.dtype={dtype}")
    cfg = load_config(overrides=base)
    sym_cfg = load_config(overrides=[*base, "sb.q=false", "sb.k=false", "sb.v=false"])
    if compare_dense and cfg.model.mlp != "moe":
        raise ConfigError(
            "--compare-dense compares a mixture of experts with dense models; add model.mlp=moe"
        )
    dev = resolve_device(cfg.train.device, option="train.device")
    amp = resolve_dtype(cfg.train.dtype, dev)
    compile = compile or cfg.train.compile
    loss_kernel = resolve_loss_kernel(cfg, dev, amp)
    t, m = cfg.train, cfg.model
    micro = t.micro_batch_size or t.batch_size
    accum = t.batch_size // micro
    n_mm = matmul_size or (4096 if dev.type == "cuda" else 2048)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    runs = {
        "sb": _Run(cfg, dev, amp, compile, seed, loss_kernel),
        "symmetric": _Run(sym_cfg, dev, amp, compile, seed, loss_kernel),
    }
    if compare_dense:
        width = m.mlp_hidden or 4 * m.n_embd
        for name, hidden in (("dense_active", m.moe_top_k * width), ("dense", width)):
            dense_cfg = load_config(
                overrides=[*base, "model.mlp=dense", f"model.mlp_hidden={hidden}"]
            )
            runs[name] = _Run(dense_cfg, dev, amp, compile, seed, loss_kernel)
    scratch = tempfile.TemporaryDirectory(prefix="symbreak-bench-") if t.log_noether else None
    noether = (
        NoetherLog(Path(scratch.name) / NOETHER_CSV, runs["sb"].model, runs["sb"].opt)
        if scratch
        else None
    )
    noether_ms: list[float] = []
    gen = torch.Generator().manual_seed(seed)
    # (x, y) from one window of block_size + 1 tokens, contiguous, as the loader makes them
    windows = [
        torch.randint(0, min(GPT2_VOCAB, m.vocab_size), (micro, m.block_size + 1), generator=gen)
        for _ in range(accum)
    ]
    batches = [(w[:, :-1].contiguous().to(dev), w[:, 1:].contiguous().to(dev)) for w in windows]

    say(
        f"bench train: {m.preset} ({runs['sb'].model.num_params() / 1e6:.2f}M parameters), "
        f"{DTYPE_NAMES[amp]}, {dev}{', compiled' if compile else ''}, {loss_kernel} loss "
        f"kernel: {warmup} warm-up + "
        f"{steps} measured rounds of {len(runs)} models"
    )
    # the run's dtype for MFU, and fp32 (the same when it is) for tokens/s per fp32 GFLOP/s
    rates = {d: _matmul_rates(n_mm, d, dev, MATMUL_REPS // 2) for d in (amp, torch.float32)}
    start = time.perf_counter()
    gc.collect()
    gc.disable()  # a collection would land in one random step
    try:
        order = list(runs)
        for r in range(warmup + steps):
            for name in order if r % 2 == 0 else order[::-1]:
                ms = runs[name].step(r, batches)
                if r < warmup:
                    runs[name].warmup_ms.append(ms)
                else:
                    runs[name].times.append(ms)
                if noether is not None and name == "sb":  # timed apart from the step
                    ms = _timed(lambda r=r: noether.log(r + 1), dev)
                    if r >= warmup:
                        noether_ms.append(ms)
            say(f"round {r + 1}/{warmup + steps} done at {time.perf_counter() - start:.1f} s")
    finally:
        gc.enable()
        if noether is not None:
            noether.close()
        if scratch is not None:
            scratch.cleanup()
    for d, r in rates.items():
        r += _matmul_rates(n_mm, d, dev, MATMUL_REPS - MATMUL_REPS // 2)
    peak, peak_fp32 = (statistics.median(rates[d]) for d in (amp, torch.float32))

    loader_tok_s = _loader_tok_per_s(cfg, micro)
    prof = None
    if profile is not None:
        prof = _profile(runs["sb"], batches, warmup + steps, Path(profile), dev)

    out: dict[str, Any] = {
        "preset": m.preset,
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_embd": m.n_embd,
        "block_size": m.block_size,
        "vocab_size": m.vocab_size,
        "sb": {"q": cfg.sb.q, "k": cfg.sb.k, "v": cfg.sb.v, "mode": cfg.sb.mode},
        "optimizer": cfg.optim.name,
        "batch_size": t.batch_size,
        "micro_batch_size": micro,
        "accum_steps": accum,
        "tokens_per_step": cfg.tokens_per_step,
        "device": str(dev),
        "dtype": DTYPE_NAMES[amp],
        "compile": compile,
        "loss_kernel": loss_kernel,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "steps": steps,
        "warmup": warmup,
        "mlp": m.mlp,
        "moe_experts": m.moe_experts if m.mlp == "moe" else None,
        "moe_top_k": m.moe_top_k if m.mlp == "moe" else None,
        "params": runs["sb"].model.num_params(),
        "params_non_embedding": runs["sb"].model.num_params(non_embedding=True),
        "params_active": runs["sb"].model.num_active_params(),
        "state_bytes": runs["sb"].state_bytes(),
        "flops_formula": FLOPS_FORMULA,
        "model_flops_per_token": runs["sb"].flops_per_token,
        "matmul_size": n_mm,
        "matmul_peak_flops_per_s": peak,
        "matmul_peak_fp32_flops_per_s": peak_fp32,
    }
    out.update(runs["sb"].report(cfg.tokens_per_step, peak))
    out["tok_per_s_per_fp32_gflops"] = out["tok_per_s"] / (peak_fp32 / 1e9)
    out["x_paper_code"] = (
        out["tok_per_s_per_fp32_gflops"] / PAPER_CODE_TOK_PER_S_PER_FP32_GFLOPS
        if _is_paper_code_config(cfg)
        else None
    )
    for name in ("symmetric", "dense_active", "dense"):
        out[name] = runs[name].summary(cfg.tokens_per_step, peak) if name in runs else None
    out["sb_overhead"] = out["symmetric"]["tok_per_s"] / out["tok_per_s"]
    for name in ("dense_active", "dense"):
        other = out[name]
        out[f"moe_over_{name}"] = out["tok_per_s"] / other["tok_per_s"] if other else None
    out["loader_tok_per_s"] = loader_tok_s
    out["loader_over_train"] = loader_tok_s / out["tok_per_s"]
    out["peak_rss_bytes"] = _peak_rss_bytes()
    out["cuda_max_memory_allocated_bytes"] = (
        torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    )
    out["profile"] = prof
    out["noether"] = None
    if noether_ms:
        n_ms = statistics.median(noether_ms)
        out["noether"] = {
            "ms": n_ms,
            "log_every": t.log_every,
            "overhead": n_ms / (t.log_every * out["step_ms"]),
            "overhead_every_step": n_ms / out["step_ms"],
        }
    return out


def _timed(fn: Callable[[], object], dev: torch.device) -> float:
    """Milliseconds of ``fn()``, CUDA synchronised."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) * 1e3


class _Run:
    """One model with its optimizer and its step times; ``step`` is one full training step."""

    def __init__(
        self,
        cfg: Config,
        dev: torch.device,
        amp: torch.dtype,
        compile: bool,
        seed: int,
        loss_kernel: str,
    ) -> None:
        with torch.random.fork_rng(devices=[]):  # same init for both models, caller's RNG kept
            torch.manual_seed(seed)
            self.model = GPT(cfg.model, cfg.sb).to(dev)
        self.model.loss_kernel = loss_kernel
        self.model.train()
        self.opt = build_optimizer(self.model, cfg.optim, seed=seed)
        # The trainer's own step object: what is timed is what training runs.
        self.train_step = TrainStep(
            self.model,
            self.opt,
            autocast=lambda: autocast(dev, amp),
            grad_clip=cfg.optim.grad_clip,
            compile=compile,
            compile_labels=("--compile", "leaving out --compile"),
        )
        self.dev = dev
        self.flops_per_token = model_flops_per_token(self.model)
        self.times: list[float] = []
        self.warmup_ms: list[float] = []

    def step(self, step: int, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """Milliseconds of one training step (:class:`~symbreak.train.step.TrainStep`, as the
        trainer runs it); CUDA synchronised."""
        return _timed(lambda: self.train_step(step, batches), self.dev)

    @property
    def compile_ok(self) -> bool:
        return self.train_step.compiled

    def state_bytes(self) -> int:
        """Parameters plus optimizer state, in bytes."""
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return params + state_bytes(self.opt)

    def summary(self, tokens_per_step: int, peak: float) -> dict[str, Any]:
        """:meth:`report` with the model's size: what the JSON gives each compared model."""
        return {
            "params": self.model.num_params(),
            "params_active": self.model.num_active_params(),
            "state_bytes": self.state_bytes(),
            "model_flops_per_token": self.flops_per_token,
            **self.report(tokens_per_step, peak),
        }

    def report(self, tokens_per_step: int, peak: float) -> dict[str, Any]:
        med = statistics.median(self.times)
        tok_s = tokens_per_step / (med / 1e3)
        achieved = self.flops_per_token * tok_s
        return {
            "tok_per_s": tok_s,
            "step_ms": med,
            "step_ms_min": min(self.times),
            "step_ms_max": max(self.times),
            "step_ms_mean": statistics.fmean(self.times),
            "achieved_flops_per_s": achieved,
            "mfu": achieved / peak,
            # the first step compiles; with no warm-up it is a measured step instead
            # (null too when compiling failed and the model ran eagerly after a warning)
            "compile_s": (self.warmup_ms or self.times)[0] / 1e3 if self.compile_ok else None,
        }


def _matmul_rates(n: int, dtype: torch.dtype, dev: torch.device, reps: int) -> list[float]:
    """FLOP/s of ``reps`` n x n matmuls in ``dtype`` (after one untimed one)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=gen).to(dev, dtype)
    b = torch.randn(n, n, generator=gen).to(dev, dtype)
    cuda = dev.type == "cuda"
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize(dev)
        rates.append(2 * n**3 / (time.perf_counter() - t0))
    return rates


def _loader_tok_per_s(cfg: Config, micro: int) -> float:
    """Tokens per second of ``TrainBatches.micro_batches`` on the configured data alone."""
    data = load_run_data(cfg)
    batches = TrainBatches(data.train, cfg.train.batch_size, micro, seed=cfg.train.seed)
    batches.micro_batches(0)  # builds the first epoch's permutation: a one-off
    calls = 0
    t0 = time.perf_counter()
    while calls < LOADER_MIN_CALLS or time.perf_counter() - t0 < LOADER_MIN_S:
        batches.micro_batches(calls + 1)
        calls += 1
    return calls * cfg.tokens_per_step / (time.perf_counter() - t0)


def _profile(
    run: _Run,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    first_step: int,
    path: Path,
    dev: torch.device,
) -> dict[str, Any]:
    """Chrome trace of PROFILE_STEPS steps of ``run`` into ``path``; the top 10 operators."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = dev.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for s in range(PROFILE_STEPS):
            run.step(first_step + s, batches)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    # per-operator self time in microseconds; CUDA kernels' own time on a GPU
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, sort_by), reverse=True)
    top = [
        {
            "name": e.key,
            "self_ms": getattr(e, sort_by) / 1e3 / PROFILE_STEPS,
            "calls": e.count // PROFILE_STEPS,
        }
        for e in events[:10]
    ]
    return {"trace": str(path), "steps": PROFILE_STEPS, "sort_by": sort_by, "top_ops": top}


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS reports bytes, Linux KiB


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`bench_train`'s result."""
    r = result
    sym = r["symmetric"]
    sb = "+".join(k for k in ("q", "k", "v") if r["sb"][k]) or "none"
    moe = r["mlp"] == "moe"
    mlp = f", MoE {r['moe_experts']} experts top-{r['moe_top_k']}" if moe else ""
    lines = [
        f"symbreak bench train: preset {r['preset']} (L={r['n_layer']}, H={r['n_head']}, "
        f"C={r['n_embd']}, T={r['block_size']}){mlp}, {r['params'] / 1e6:.2f}M parameters "
        f"({r['params_active'] / 1e6:.2f}M active), "
        f"{r['optimizer']}, {r['dtype']}, {r['device']}{', compiled' if r['compile'] else ''}, "
        f"{r['loss_kernel']} loss kernel, {r['torch_threads']} torch threads, torch {r['torch']}",
        f"{r['batch_size']} sequences x {r['block_size']} tokens per step "
        f"({r['accum_steps']} micro-batch(es) of {r['micro_batch_size']}); median of "
        f"{r['steps']} steps after {r['warmup']} warm-up, the two models interleaved",
        f"model FLOPs/token {r['model_flops_per_token'] / 1e6:.2f}M ({r['flops_formula']})",
        f"peak: {r['matmul_size']}^2 matmul in {r['dtype']} = "
        f"{r['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s (measured in this run)",
        "",
        f"{'model':<16}{'tok/s':>10}{'median ms':>11}{'min–max ms':>19}{'GFLOP/s':>10}"
        f"{'MFU':>8}{'compile s':>11}{'active M':>10}{'state MiB':>11}",
    ]
    models = [(f"sb ({sb})", r), ("symmetric", sym)]
    models += [(name, r[name]) for name in ("dense_active", "dense") if r.get(name)]
    for label, s in models:
        spread = f"{s['step_ms_min']:.1f}–{s['step_ms_max']:.1f}"
        comp = "-" if s["compile_s"] is None else f"{s['compile_s']:.1f}"
        lines.append(
            f"{label:<16}{s['tok_per_s']:>10.0f}{s['step_ms']:>11.1f}{spread:>19}"
            f"{s['achieved_flops_per_s'] / 1e9:>10.1f}{s['mfu']:>8.1%}{comp:>11}"
            f"{s['params_active'] / 1e6:>10.2f}{s['state_bytes'] / 2**20:>11.1f}"
        )
    lines += [
        "",
        f"sb_overhead (symmetric tok/s / sb tok/s) = {r['sb_overhead']:.3f}",
        *(
            [
                f"MoE tok/s over dense of equal active size {r['moe_over_dense_active']:.3f}, "
                f"over dense of the expert width {r['moe_over_dense']:.3f}"
            ]
            if r.get("moe_over_dense") is not None
            else []
        ),
        f"{r['tok_per_s_per_fp32_gflops']:.1f} tok/s per fp32 GFLOP/s "
        f"({r['matmul_peak_fp32_flops_per_s'] / 1e9:.1f} GFLOP/s in this run)"
        + (
            f" = {r['x_paper_code']:.2f}x the paper's code (10.9)"
            if r["x_paper_code"] is not None
            else ""
        ),
        f"loader alone: {r['loader_tok_per_s']:,.0f} tok/s = {r['loader_over_train']:.0f} x "
        "training (target >= 10)",
        f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB"
        + (
            f", CUDA max allocated {r['cuda_max_memory_allocated_bytes'] / 2**20:.0f} MiB"
            if r["cuda_max_memory_allocated_bytes"] is not None
            else ""
        ),
    ]
    if r["noether"] is not None:
        n = r["noether"]
        lines.append(
            f"train.log_noether: {n['ms']:.2f} ms per log = {n['overhead']:.2%} of training "
            f"time at log_every={n['log_every']} ({n['overhead_every_step']:.2%} of a step)"
        )
    if r["profile"] is not None:
        p = r["profile"]
        lines += [
            "",
            f"profile: {p['steps']} steps of the sb model -> {p['trace']}; top 10 by "
            f"{p['sort_by']} (per step)",
            f"{'operator':<48}{'self ms':>10}{'calls':>8}",
        ]
        lines += [f"{o['name'][:47]:<48}{o['self_ms']:>10.2f}{o['calls']:>8}" for o in p["top_ops"]]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_STEPS",
    "DEFAULT_WARMUP",
    "bench_train",
    "format_table",
    "model_flops_per_token",
]
