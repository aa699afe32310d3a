"""The training loop behind ``symbreak train``.

One optimizer step::

    pin the symmetry-breaking draws of this step (keyed by (seed, step, layer))
    for each micro-batch of this rank:  loss_m = CE(model(x), y);  (loss_m / accum).backward()
    clip (optional); optimizer.step()   (ECD also receives the step's mean loss)

``train.batch_size`` sequences per step in total, ``train.micro_batch_size`` per forward; the
accumulation count follows. Validation runs on a fixed held-out set (``train.eval_tokens``),
the same batches every time, with the biases at their evaluation setting (``sb.eval``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from symbreak.config import Config
from symbreak.data import TrainBatches, load_data, val_batches
from symbreak.errors import ConfigError, TrainingError
from symbreak.eval.val_loss import evaluate_loss
from symbreak.model import GPT
from symbreak.optim import build_optimizer, lr_at, set_lr
from symbreak.train.checkpoint import LATEST, save_checkpoint
from symbreak.train.metrics import MetricsWriter


@dataclass
class RunSummary:
    run_dir: str
    steps: int
    tokens: int
    params: int
    initial_val_loss: float
    final_val_loss: float
    best_val_loss: float
    final_train_loss: float
    tok_per_s: float
    elapsed_s: float
    device: str
    dtype: str

    def lines(self) -> list[str]:
        return [
            f"run          {self.run_dir}",
            f"model        {self.params / 1e6:.2f}M parameters on {self.device} ({self.dtype})",
            f"trained      {self.steps} steps, {self.tokens:,} tokens in {self.elapsed_s:.1f} s "
            f"({self.tok_per_s:,.0f} tokens/s)",
            f"train loss   {self.final_train_loss:.4f} (mean of the last log interval)",
            f"val loss     {self.initial_val_loss:.4f} at start -> {self.final_val_loss:.4f} "
            f"at end (best {self.best_val_loss:.4f})",
        ]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype of autocast: ``auto`` is bf16 on CUDA and fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train(cfg: Config) -> RunSummary:
    """Train ``cfg`` (resolved) into ``<train.out_dir>/<train.name>``; return a summary."""
    t = cfg.train
    run_dir = Path(t.out_dir) / t.name
    if (run_dir / "checkpoints" / LATEST).exists():
        raise ConfigError(
            f"{run_dir} already holds a trained run; choose another train.name=... or delete it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(run_dir / "config.toml", cfg.to_toml())

    device = resolve_device(t.device)
    dtype = resolve_dtype(t.dtype, device)
    torch.manual_seed(t.seed)

    data = load_data(
        cfg.data.source,
        cfg.model.block_size,
        cfg.model.vocab_size,
        cache_dir=Path(cfg.data.cache_dir) if cfg.data.cache_dir else None,
    )
    model = GPT(cfg.model, cfg.sb).to(device)
    optimizer = build_optimizer(model, cfg.optim, seed=t.seed)
    needs_loss = getattr(optimizer, "needs_loss", False)

    micro = t.micro_batch_size or t.batch_size
    batches = TrainBatches(data.train, t.batch_size, micro, seed=t.seed)
    held_out = val_batches(data.val, t.eval_tokens, micro)
    step_model = torch.compile(model) if t.compile else model
    total = cfg.total_steps
    tokens_per_step = cfg.tokens_per_step

    def validate() -> float:
        return evaluate_loss(model, held_out, device, autocast(device, dtype))

    val_loss = validate()
    initial_val = best_val = val_loss
    start = time.perf_counter()
    train_time = 0.0
    window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
    last_train_loss = float("nan")
    bar = tqdm(total=total, disable=not t.progress, unit="step", dynamic_ncols=True, desc=t.name)
    # ECD reports steps it refused to take (V - F0 <= eps2); they belong next to the loss.
    extra = ["frozen_steps"] if hasattr(optimizer, "frozen_steps") else []
    with MetricsWriter(run_dir / "metrics.csv", extra) as metrics:
        metrics.write(
            step=0, tokens=0, val_loss=val_loss, lr=lr_at(0, cfg.optim, total), elapsed_s=0.0
        )
        for step in range(total):
            t0 = time.perf_counter()
            lr = lr_at(step, cfg.optim, total)
            set_lr(optimizer, lr)
            model.train()
            model.pin_biases(step)
            loss_sum = torch.zeros((), device=device)
            micro_batches = batches.micro_batches(step)
            for x, y in micro_batches:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast(device, dtype):
                    _, loss = step_model(x, y)
                (loss / len(micro_batches)).backward()
                loss_sum += loss.detach()
            step_loss = loss_sum / len(micro_batches)
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            loss_value = step_loss.item()  # the one host synchronisation of the step
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"training loss is {loss_value} at step {step + 1}; the run diverged: "
                    "lower optim.lr (or enable optim.grad_clip) and start a new run"
                )
            if needs_loss:
                optimizer.step(loss=step_loss)
            else:
                optimizer.step()
            if step == 0 and getattr(optimizer, "frozen_steps", 0):
                # F0 above the starting loss: nothing would ever move. (Later freezes, when the
                # loss has come down to F0, are warned about once and counted in metrics.csv.)
                raise TrainingError(
                    f"ECD cannot move: optim.F0={cfg.optim.F0} is not below the loss "
                    f"{loss_value:.4g} at the first step; set optim.F0 lower or optim.F0=auto"
                )
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            train_time += dt
            done = step + 1
            window_loss += loss_value
            window_steps += 1
            window_tokens += tokens_per_step
            window_time += dt

            is_eval = done == total or (t.eval_every and done % t.eval_every == 0)
            if is_eval:
                val_loss = validate()
                best_val = min(best_val, val_loss)
            if is_eval or done % t.log_every == 0:
                last_train_loss = window_loss / window_steps
                tok_s = window_tokens / max(window_time, 1e-9)
                metrics.write(
                    step=done,
                    tokens=done * tokens_per_step,
                    train_loss=last_train_loss,
                    val_loss=val_loss if is_eval else None,
                    lr=lr,
                    tok_per_s=tok_s,
                    elapsed_s=time.perf_counter() - start,
                    **{k: getattr(optimizer, k) for k in extra},
                )
                bar.set_postfix(
                    loss=f"{last_train_loss:.3f}",
                    val=f"{val_loss:.3f}",
                    tok_s=f"{tok_s:,.0f}",
                    refresh=False,
                )
                window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
            if t.checkpoint_every and done % t.checkpoint_every == 0 and done != total:
                _checkpoint(run_dir, done, model, optimizer, cfg, val_loss, best_val)
            bar.update(1)
    bar.close()
    model.unpin_biases()
    _checkpoint(run_dir, total, model, optimizer, cfg, val_loss, best_val)
    return RunSummary(
        run_dir=str(run_dir),
        steps=total,
        tokens=total * tokens_per_step,
        params=model.num_params(),
        initial_val_loss=initial_val,
        final_val_loss=val_loss,
        best_val_loss=best_val,
        final_train_loss=last_train_loss,
        tok_per_s=total * tokens_per_step / max(train_time, 1e-9),
        elapsed_s=time.perf_counter() - start,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
    )


def _checkpoint(
    run_dir: Path,
    step: int,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    val_loss: float,
    best_val: float,
) -> None:
    save_checkpoint(
        run_dir,
        step,
        model,
        optimizer,
        {
            "tokens": step * cfg.tokens_per_step,
            "val_loss": val_loss,
            "best_val_loss": best_val,
            "config": cfg.to_dict(),
        },
    )


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
