"""The training loop behind ``symbreak train``: single process or DDP, resumable bit for bit.

One optimizer step::

    pin the symmetry-breaking draws of this step (keyed by (seed, step, layer): all ranks agree)
    for each micro-batch of this rank:  loss_m = CE(model(x), y);  (loss_m / accum).backward()
    all-reduce [mean loss, stop flag]   (DDP has averaged the gradients during backward)
    clip (optional); optimizer.step()   (ECD also receives the global mean loss)

``train.batch_size`` sequences per step in total, over all ranks; ``train.micro_batch_size``
per forward per rank; the accumulation count follows. Validation runs on a fixed held-out set
(``train.eval_tokens``), the same batches every time, with the biases at ``sb.eval``.

Resuming: the data order and the bias draws are pure functions of the step, so a checkpoint
needs only the model, the optimizer (ECD's noise generator included), torch's RNG state and the
loop's counters. A resumed run continues exactly where the checkpoint was written; rows of
``metrics.csv`` logged after that checkpoint (by a run that died) are dropped first.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from symbreak.atomic import write_text_atomic
from symbreak.compiling import CompiledOrEager
from symbreak.config import Config, flatten
from symbreak.data import (
    TrainBatches,
    addition_spec,
    load_data,
    run_loss_positions,
    val_batches,
    val_window_indices,
)
from symbreak.device import autocast, resolve_dtype
from symbreak.errors import CheckpointError, ConfigError, TrainingError
from symbreak.model import GPT
from symbreak.model.loss import choose_loss_kernel
from symbreak.optim import build_optimizer, lr_at, optimizer_step, set_lr
from symbreak.progress import Progress
from symbreak.train.checkpoint import (
    LATEST,
    load_model_weights,
    load_optimizer_state,
    newest_complete_checkpoint,
    prune_checkpoints,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
)
from symbreak.train.distributed import DistEnv, init_distributed
from symbreak.train.fsdp import (
    full_model_state,
    full_optimizer_state,
    is_sharded,
    local_state_bytes,
    shard_model,
    shard_optimizer_state,
)
from symbreak.train.lock import RunLockedError, read_holder, run_lock
from symbreak.train.loggers import build_loggers
from symbreak.train.metrics import MetricsWriter
from symbreak.train.noether_log import FILENAME as NOETHER_CSV
from symbreak.train.noether_log import NoetherLog
from symbreak.train.validation import loss_sums

# Config keys that define what a run *is*: resuming with another value would silently train a
# different model or on other data. Everything else (budget, logging, lr, ...) may change.
IDENTITY_KEYS = ("model", "sb", "optim.name", "data.source", "train.seed", "train.batch_size")
# Files a training attempt writes into its run directory besides checkpoints/. A fresh start
# (no checkpoint to resume from) removes those a failed earlier attempt left behind, so nothing
# of that attempt (metrics.csv rows, TensorBoard events, the W&B run id) mixes into this one.
ATTEMPT_FILES = ("metrics.csv", "noether.csv", "config.toml", "tensorboard", "wandb_id.json")


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
    world_size: int = 1
    resumed_from: int | None = None
    stopped_by: str | None = None  # a signal name when interrupted
    notes: list[str] = field(default_factory=list)
    val_step: int | None = None  # the step final_val_loss was measured at (None: self.steps)

    def lines(self) -> list[str]:
        out = list(self.notes)
        out += [
            f"run          {self.run_dir}",
            f"model        {self.params / 1e6:.2f}M parameters on {self.device} ({self.dtype})"
            + (f" x {self.world_size} processes" if self.world_size > 1 else ""),
            f"trained      {self.steps} steps, {self.tokens:,} tokens"
            + (f" (resumed at step {self.resumed_from})" if self.resumed_from else "")
            + (f"; {self.tok_per_s:,.0f} tokens/s" if math.isfinite(self.tok_per_s) else ""),
            f"train loss   {self.final_train_loss:.4f} (mean of the last log interval)",
            f"val loss     {self.initial_val_loss:.4f} at start -> {self.final_val_loss:.4f} "
            f"at step {self.steps if self.val_step is None else self.val_step} "
            f"(best {self.best_val_loss:.4f})",
        ]
        if self.stopped_by:
            out.append(
                f"stopped by {self.stopped_by} after step {self.steps}; a checkpoint was written. "
                "Run the same command again to resume."
            )
        return out


def train(cfg: Config) -> RunSummary:
    """Train ``cfg`` (resolved) into ``<train.out_dir>/<train.name>``; return a summary.

    The run directory is locked (:mod:`symbreak.train.lock`) for the whole run: a second
    process training the same run stops at once with :class:`RunLockedError`.
    """
    apply_threads(cfg.train.threads)
    run_dir = check_run_dir(cfg)
    out_existed = run_dir.parent.exists()
    env = init_distributed(cfg.train.device)
    try:
        with _locked(run_dir, env):
            return Trainer(cfg, env).run()
    except BaseException:
        if env.is_main and not out_existed:  # train.out_dir made by this failed fresh start
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()  # only if empty
        raise
    finally:
        env.close()


def resolve_loss_kernel(cfg: Config, device: torch.device, dtype: torch.dtype) -> str:
    """``train.loss_kernel`` for this run (``dtype``: its resolved compute dtype): auto weighs
    the run's whole budget of logits."""
    run_logits = cfg.total_steps * cfg.tokens_per_step * cfg.model.vocab_size
    return choose_loss_kernel(cfg.train.loss_kernel, device.type, dtype, run_logits)


def apply_threads(threads: int) -> None:
    """``train.threads``: torch's intra-op CPU threads; 0 leaves torch's default alone."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def check_run_dir(cfg: Config) -> Path:
    """``<train.out_dir>/<train.name>``, refused before anything is written if a file is in the
    way or the directory cannot be created."""
    out, run_dir = Path(cfg.train.out_dir), Path(cfg.train.out_dir) / cfg.train.name
    for key, path in (("train.out_dir", out), ("train.name", run_dir)):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"{key}: {path} is a file, not a directory; runs are written to "
                "train.out_dir/train.name: choose another train.out_dir or train.name"
            )
    parent = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"train.out_dir: {parent} is a file, so {run_dir} cannot be created")
    if not _writable(parent):
        raise ConfigError(
            f"train.out_dir: cannot write into {parent} (permission denied); choose another "
            "train.out_dir"
        )
    return run_dir


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


@contextlib.contextmanager
def _locked(run_dir: Path, env: DistEnv) -> Any:
    """Rank 0 holds the run directory's lock; every rank learns whether it got it, so a second
    torchrun job stops on all its ranks instead of hanging in its first collective."""
    with contextlib.ExitStack() as stack:
        error: RunLockedError | None = None
        if env.is_main:
            try:
                stack.enter_context(run_lock(run_dir))
            except RunLockedError as e:
                error = e
        if env.enabled:
            flag = torch.tensor([float(error is not None)], device=env.device)
            if env.all_reduce(flag).item() > 0 and error is None:
                error = RunLockedError(run_dir, read_holder(run_dir))
        if error is not None:
            raise error
        yield


class _StopOnSignal:
    """SIGINT/SIGTERM ask the loop to stop after the current step (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: Config, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        t = cfg.train
        self.run_dir = Path(t.out_dir) / t.name
        self.device = env.device
        self.dtype = resolve_dtype(t.dtype, self.device)
        self.total = cfg.total_steps
        self.tokens_per_step = cfg.tokens_per_step
        self.micro = t.micro_batch_size or max(1, t.batch_size // env.world_size)
        self.stopper = _StopOnSignal()
        self.notes: list[str] = []
        self.checkpoints_written = 0

    def _say(self, line: str) -> None:
        """A start-up line on stdout, from rank 0 only."""
        if self.env.is_main:
            print(line, flush=True)

    # ---- set-up ------------------------------------------------------------------------------

    def _resume_point(self) -> tuple[Path | None, dict | None]:
        """The checkpoint to resume from (checked for compatibility), or (None, None)."""
        if (self.run_dir / "checkpoints" / LATEST).exists():
            ckpt = resolve_checkpoint(self.run_dir)
        else:  # killed between a first checkpoint's rename and its `latest` pointer
            ckpt = newest_complete_checkpoint(self.run_dir)
            if ckpt is None:
                return None, None
        state = read_state(ckpt)
        if self.cfg.train.resume == "never":
            raise ConfigError(
                f"{self.run_dir} already holds a run (checkpoint at step {state['step']}) and "
                "train.resume=never; choose another train.name or use train.resume=auto"
            )
        stored = Config.from_dict(state["config"], origin=str(ckpt))
        if stored.train.eval_windows != self.cfg.train.eval_windows:
            # The held-out set is part of a run's curve: a run keeps the one it started with
            # (runs from before train.eval_windows used the first windows of the split).
            self.notes.append(
                f"note: this run measures validation loss on its original held-out set "
                f"(train.eval_windows={stored.train.eval_windows}); keeping it"
            )
            self.cfg.train.eval_windows = stored.train.eval_windows
        _check_compatible(stored, self.cfg, ckpt)
        return ckpt, state

    def _summary(self, model: GPT | None, state: dict, **kw: Any) -> RunSummary:
        kw["notes"] = self.notes + kw.get("notes", [])
        return RunSummary(
            run_dir=str(self.run_dir),
            steps=state["step"],
            tokens=state["step"] * self.tokens_per_step,
            params=model.num_params() if model is not None else state.get("params", 0),
            initial_val_loss=state["initial_val_loss"],
            final_val_loss=state["val_loss"],
            best_val_loss=state["best_val_loss"],
            final_train_loss=state["last_train_loss"],
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            world_size=self.env.world_size,
            **kw,
        )

    # ---- the run -------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        # Signals are caught from the start: a SIGTERM during set-up still ends in a checkpoint.
        created = not self.run_dir.exists() or _only_lock(self.run_dir)
        try:
            with self.stopper:
                return self._run()
        except BaseException:
            # A fresh run that fails before its first checkpoint (NaN loss, frozen ECD, a missing
            # optional package, Ctrl-C twice) leaves nothing to resume: remove what it wrote, so
            # the directory looks as it did before the command.
            if self.env.is_main and created and not self.checkpoints_written:
                _clear_attempt(self.run_dir, remove_dir=True)
            raise

    def _run(self) -> RunSummary:
        cfg, t, env = self.cfg, self.cfg.train, self.env
        ckpt, resumed = self._resume_point()  # every check before anything is written
        if resumed is None and self.env.is_main and _clear_attempt(self.run_dir):
            self._say(f"{self.run_dir} holds no checkpoint: removed a failed attempt's files")
        if resumed is not None and resumed["step"] >= self.total:
            return self._summary(
                None,
                resumed,
                tok_per_s=float("nan"),
                elapsed_s=0.0,
                notes=[
                    f"{self.run_dir} is already complete at step {resumed['step']}; nothing to do"
                ],
            )

        torch.manual_seed(t.seed)
        data = load_data(
            cfg.data.source,
            cfg.model.block_size,
            cfg.model.vocab_size,
            cache_dir=Path(cfg.data.cache_dir) if cfg.data.cache_dir else None,
            addition=addition_spec(cfg.data),
        )
        model = GPT(cfg.model, cfg.sb).to(self.device)
        model.loss_kernel = resolve_loss_kernel(cfg, self.device, self.dtype)
        if model.loss_kernel == "compiled":
            self._say(
                f"loss kernel: compiled (train.loss_kernel={t.loss_kernel}); the first training "
                "step and the first evaluation each compile theirs, a few seconds"
            )
        if cfg.model.init_from and resumed is None:  # a resumed run has its own weights
            from symbreak.train.init_from import init_model_from

            init_model_from(model, cfg.model.init_from)
        if resumed is not None:  # whole weights, before any sharding
            load_model_weights(model, ckpt)
        fsdp = t.parallel == "fsdp" and env.enabled
        if fsdp:
            shard_model(model)
        elif t.parallel == "fsdp":
            self.notes.append(
                "note: train.parallel=fsdp in a single process has nothing to shard; the run "
                "is unsharded (start it with torchrun --nproc_per_node=N to shard)"
            )
        optimizer = build_optimizer(model, cfg.optim, seed=t.seed)
        positions = run_loss_positions(cfg)
        batches = TrainBatches(
            data.train,
            t.batch_size,
            self.micro,
            seed=t.seed,
            rank=env.rank,
            world_size=env.world_size,
            positions=positions,
        )
        # FSDP: an FSDP forward is a collective, so every rank runs the whole held-out set
        # (ranks with unequal shares would deadlock); DDP splits it over the ranks.
        eval_rank, eval_world = (0, 1) if fsdp else (env.rank, env.world_size)
        held_out = val_batches(
            data.val,
            t.eval_tokens,
            self.micro,
            eval_rank,
            eval_world,
            how=t.eval_windows,
            positions=positions,
        )
        val_set = held_out_set(data.val, t.eval_tokens, t.eval_windows)
        if resumed is not None:
            _check_same_val_set(resumed, val_set, ckpt)
        self._say(val_set.describe(t.eval_tokens))

        state: dict[str, Any] = {
            "step": 0,
            "window": [0.0, 0, 0, 0.0],
            "nonfinite": 0,
            "last_train_loss": float("nan"),
            "val_step": 0,
            "elapsed_s": 0.0,
            "val_set": val_set.fingerprint(),
        }
        if resumed is not None:
            load_optimizer_state(
                optimizer,
                ckpt,
                resumed,
                prepare=(lambda sd: shard_optimizer_state(optimizer, sd)) if fsdp else None,
            )
            torch.set_rng_state(torch.tensor(resumed["rng"]["torch"], dtype=torch.uint8))
            if self.device.type == "cuda" and resumed["rng"].get("cuda"):
                torch.cuda.set_rng_state(torch.tensor(resumed["rng"]["cuda"], dtype=torch.uint8))
            state.update(
                {
                    k: resumed[k]
                    for k in (
                        "step",
                        "window",
                        "nonfinite",
                        "val_loss",
                        "best_val_loss",
                        "initial_val_loss",
                        "last_train_loss",
                    )
                }
            )
            # Checkpoints from before these were recorded: the curve's last point, no time.
            state["val_step"] = resumed.get("val_step", resumed["step"])
            state["elapsed_s"] = float(resumed.get("elapsed_s", 0.0))

        wrapped = DistributedDataParallel(model) if env.enabled and not fsdp else model
        step_model = (
            CompiledOrEager(wrapped, "train.compile=true", "train.compile=false")
            if t.compile
            else wrapped
        )
        ctx = autocast(self.device, self.dtype)

        def validate() -> float:
            sums = loss_sums(model, held_out, self.device, ctx)
            total, count = (sums if fsdp else env.all_reduce(sums)).tolist()
            return total / max(count, 1.0)

        def addition_exact_match() -> dict[str, float]:
            # Addition runs also log greedy exact match on the held-out problems at every
            # evaluation, so convergence (steps to 90%) is read off metrics.csv; every rank
            # computes the same deterministic number, rank 0 writes it.
            if cfg.data.source != "addition":
                return {}
            from symbreak.eval.addition import evaluate_addition

            with ctx:
                r = evaluate_addition(model, cfg, n_problems=min(cfg.data.addition_val, 1000))
            return {"exact_match": r["exact_match"]["mean"]}

        main = env.is_main
        extra = ["frozen_steps"] if hasattr(optimizer, "frozen_steps") else []
        extra_eval = ["exact_match"] if cfg.data.source == "addition" else []
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        loggers = build_loggers(cfg, self.run_dir) if main else []  # may fail: before writing
        if main:
            write_text_atomic(self.run_dir / "config.toml", cfg.to_toml())
        metrics = (
            MetricsWriter(
                self.run_dir / "metrics.csv",
                extra + extra_eval,
                resume_step=state["step"] if resumed else None,
                fresh=resumed is None,
            )
            if main
            else None
        )
        noether = (
            NoetherLog(
                self.run_dir / NOETHER_CSV,
                model,
                optimizer,
                resume_step=state["step"] if resumed else None,
            )
            if main and t.log_noether
            else None
        )

        if resumed is None:
            val = validate()
            state.update(val_loss=val, best_val_loss=val, initial_val_loss=val)
            if metrics:
                metrics.write(
                    step=0,
                    tokens=0,
                    val_loss=val,
                    lr=lr_at(0, cfg.optim, self.total),
                    elapsed_s=0.0,
                    **{k: 0 for k in extra},
                    **addition_exact_match(),
                )
        start_step = state["step"]
        start = time.perf_counter()
        elapsed_before = state["elapsed_s"]  # cumulative over the sessions of this run

        def elapsed() -> float:
            return elapsed_before + time.perf_counter() - start

        train_time = 0.0
        bar = Progress(
            total=self.total,
            initial=start_step,
            enabled=t.progress and main,
            desc=t.name,
            every=t.log_every,
        )
        stopper = self.stopper
        try:
            for step in range(start_step, self.total):
                t0 = time.perf_counter()
                lr = lr_at(step, cfg.optim, self.total)
                set_lr(optimizer, lr)
                model.train()
                model.pin_biases(step)
                mbs = batches.micro_batches(step)
                loss_sum = torch.zeros((), device=self.device)
                for i, (x, y) in enumerate(mbs):
                    x = x.to(self.device, non_blocking=True)
                    y = y.to(self.device, non_blocking=True)
                    last = i == len(mbs) - 1
                    if fsdp:  # reduce-scatter the gradients once, after the last micro-batch
                        model.set_requires_gradient_sync(last)  # type: ignore[operator]
                    sync = (
                        wrapped.no_sync()
                        if env.enabled and not fsdp and not last
                        else contextlib.nullcontext()
                    )
                    with sync:
                        with ctx:
                            _, loss = step_model(x, y)
                        (loss / len(mbs)).backward()
                    loss_sum += loss.detach()
                # One all-reduce and one host sync per step: the global loss and the stop flag.
                stats = torch.stack(
                    (
                        loss_sum / len(mbs),
                        torch.tensor(float(stopper.signal_name is not None), device=self.device),
                    )
                )
                env.all_reduce(stats)
                stats[0] /= env.world_size
                loss_value, stop_votes = stats.tolist()
                if not math.isfinite(loss_value):
                    optimizer.zero_grad(set_to_none=True)
                    if state["nonfinite"] >= t.skip_nonfinite:
                        raise TrainingError(
                            f"training loss is {loss_value} at step {step + 1}; stopped. The "
                            "last checkpoint is intact: lower optim.lr or set "
                            "optim.grad_clip, or tolerate a few bad batches with "
                            "train.skip_nonfinite=N"
                        )
                    state["nonfinite"] += 1
                    warnings.warn(
                        f"non-finite loss at step {step + 1} skipped "
                        f"({state['nonfinite']} of {t.skip_nonfinite} allowed)",
                        RuntimeWarning,
                        stacklevel=1,
                    )
                else:
                    if cfg.optim.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    optimizer_step(optimizer, stats[0])
                    optimizer.zero_grad(set_to_none=True)
                    if step == 0 and getattr(optimizer, "frozen_steps", 0):
                        # F0 above the starting loss: nothing would ever move. (Later freezes
                        # are warned about once and counted in metrics.csv.)
                        raise TrainingError(
                            f"ECD cannot move: optim.F0={cfg.optim.F0} is not below the loss "
                            f"{loss_value:.4g} at the first step; set optim.F0 lower or "
                            "optim.F0=auto"
                        )
                dt = time.perf_counter() - t0
                train_time += dt
                done = step + 1
                state["step"] = done
                w = state["window"]
                if math.isfinite(loss_value):
                    w[0] += loss_value
                    w[1] += 1
                w[2] += self.tokens_per_step
                w[3] += dt

                is_eval = done == self.total or (t.eval_every and done % t.eval_every == 0)
                if is_eval:
                    state["val_loss"] = validate()
                    state["val_step"] = done
                    state["best_val_loss"] = min(state["best_val_loss"], state["val_loss"])
                if is_eval or done % t.log_every == 0:
                    state["last_train_loss"] = w[0] / w[1] if w[1] else float("nan")
                    tok_s = w[2] / max(w[3], 1e-9)
                    row = dict(
                        step=done,
                        tokens=done * self.tokens_per_step,
                        train_loss=state["last_train_loss"],
                        val_loss=state["val_loss"] if is_eval else None,
                        lr=lr,
                        tok_per_s=tok_s,
                        elapsed_s=elapsed(),
                        **{k: getattr(optimizer, k) for k in extra},
                        **(addition_exact_match() if is_eval else {}),
                    )
                    if metrics:
                        metrics.write(**row)
                    scalars = noether.log(done) if noether else {}
                    for lg in loggers:
                        lg.log(done, {**row, **scalars})
                    bar.set_postfix(
                        loss=f"{state['last_train_loss']:.3f}",
                        val=f"{state['val_loss']:.3f}",
                        tok_s=f"{tok_s:,.0f}",
                    )
                    state["window"] = [0.0, 0, 0, 0.0]
                bar.update(1)
                state["elapsed_s"] = elapsed()
                stop = stop_votes > 0
                if (
                    done == self.total
                    or stop
                    or (t.checkpoint_every and done % t.checkpoint_every == 0)
                ):
                    self._checkpoint(model, optimizer, state)
                if stop:
                    break
        finally:
            bar.close()
            if metrics:
                metrics.close()
            if noether:
                noether.close()
            for lg in loggers:
                lg.close()
        model.unpin_biases()
        if fsdp:
            self.notes.append(_fsdp_memory_note(model, optimizer, env))
        return self._summary(
            model,
            state,
            tok_per_s=(state["step"] - start_step) * self.tokens_per_step / max(train_time, 1e-9),
            elapsed_s=elapsed(),
            val_step=state["val_step"],
            resumed_from=start_step if resumed is not None else None,
            stopped_by=stopper.signal_name if state["step"] < self.total else None,
        )

    def _checkpoint(self, model: GPT, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Rank 0 writes; everyone waits, so no rank runs ahead of a checkpoint being written.
        A sharded model is gathered first, by every rank (a collective)."""
        gathered: dict[str, Any] = {}
        if is_sharded(model):
            keep = self.env.is_main  # only the writer holds the full copy
            gathered = {
                "model_state": full_model_state(model, keep),
                "optimizer_state": full_optimizer_state(optimizer, keep),
            }
        if self.env.is_main:
            step = state["step"]
            rng = {"torch": torch.get_rng_state().tolist()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device).tolist()
            payload = {
                **state,
                "tokens": step * self.tokens_per_step,
                "rng": rng,
                "params": model.num_params(),
                "world_size": self.env.world_size,
                "config": self.cfg.to_dict(),
            }
            payload.pop("step")
            try:
                save_checkpoint(self.run_dir, step, model, optimizer, payload, **gathered)
            except OSError as e:
                previous = (
                    "the previous checkpoint is intact: free space and run the same command to "
                    "resume from it"
                    if (self.run_dir / "checkpoints" / LATEST).exists()
                    else "no checkpoint was written yet: free space and run the command again"
                )
                raise TrainingError(
                    f"could not write checkpoint step {step} in {self.run_dir / 'checkpoints'} "
                    f"({e.strerror or e}); {previous}"
                ) from None
            self.checkpoints_written += 1
            prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)
        self.env.barrier()


def _fsdp_memory_note(model: GPT, optimizer: torch.optim.Optimizer, env: DistEnv) -> str:
    """Per-rank parameter + optimizer-state bytes (and peak RSS) of a sharded run, rank 0's."""
    import resource

    mine = local_state_bytes(model, optimizer)
    total = torch.tensor([float(mine)], device=env.device)
    env.all_reduce(total)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    others = torch.tensor([0.0 if env.is_main else rss], device=env.device)
    env.all_reduce(others, op="max")
    return (
        f"fsdp: parameters + optimizer state {mine / 2**20:.2f} MiB on rank 0 of "
        f"{total.item() / 2**20:.2f} MiB over {env.world_size} ranks; peak RSS {rss:.0f} MiB "
        f"on rank 0 (it gathers the checkpoints), at most {others.item():.0f} MiB on the others"
    )


def _check_compatible(stored: Config, new: Config, ckpt: Path) -> None:
    old_flat, new_flat = flatten(stored.to_dict()), flatten(new.to_dict())
    for key in old_flat:
        if any(key == k or key.startswith(k + ".") for k in IDENTITY_KEYS) and (
            old_flat[key] != new_flat[key]
        ):
            raise CheckpointError(
                f"cannot resume from {ckpt}: {key} is {old_flat[key]!r} there but "
                f"{new_flat[key]!r} now; use the run's own settings (its config.toml) or "
                "another train.name"
            )


def _only_lock(run_dir: Path) -> bool:
    """The directory holds nothing but the lock file (this process just created it)."""
    from symbreak.train.lock import LOCK_FILE

    return all(p.name == LOCK_FILE for p in run_dir.iterdir())


def _clear_attempt(run_dir: Path, remove_dir: bool = False) -> bool:
    """Remove what a training attempt without a checkpoint wrote (see :data:`ATTEMPT_FILES`,
    and ``checkpoints/`` when it holds no complete checkpoint); with ``remove_dir``, also the
    directory itself when nothing else is left. Returns whether anything was removed."""
    from symbreak.train.lock import LOCK_FILE

    if not run_dir.is_dir():
        return False
    removed = False
    for name in ATTEMPT_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed = True
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed = True
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and not any(p.name.startswith("step_") for p in ckpts.iterdir()):
        shutil.rmtree(ckpts, ignore_errors=True)  # only temporary leftovers of a killed write
    if remove_dir and all(p.name == LOCK_FILE for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
    return removed


@dataclass
class HeldOutSet:
    """What the validation curve is measured on: ``windows`` windows of the validation split
    (evenly spaced over it, or its first ones: ``how``), ``block_size`` target tokens each."""

    windows: int
    block_size: int
    available: int  # windows in the whole validation split
    digest: str  # blake2b of the windows' tokens: a changed data source shows here
    how: str = "spread"

    @property
    def tokens(self) -> int:
        return self.windows * self.block_size

    def fingerprint(self) -> dict[str, Any]:
        return {"windows": self.windows, "block_size": self.block_size, "digest": self.digest}

    def describe(self, asked: int) -> str:
        line = (
            f"validation: a fixed held-out set of {self.windows:,} windows x {self.block_size} "
            f"= {self.tokens:,} tokens"
            + (" spread evenly over the split" if self.how == "spread" else ", the split's first")
        )
        if self.windows == self.available and asked > self.tokens:
            return line + (
                f": the whole validation split, fewer than train.eval_tokens={asked:,}"
            )
        return line + f" (train.eval_tokens={asked:,}; the split has {self.available:,} windows)"


def held_out_set(windows: Any, eval_tokens: int, how: str = "spread") -> HeldOutSet:
    """The held-out set that :func:`symbreak.data.val_batches` builds, summarised."""
    idx = val_window_indices(len(windows), eval_tokens, windows.block_size, how)
    tokens = windows.get(idx).numpy()
    digest = hashlib.blake2b(tokens.tobytes(), digest_size=12).hexdigest()
    return HeldOutSet(len(idx), windows.block_size, len(windows), digest, how)


def _check_same_val_set(resumed: dict, val_set: HeldOutSet, ckpt: Path) -> None:
    """A validation curve is comparable only on one held-out set: refuse to continue it on
    another (a changed train.eval_tokens, or data behind data.source that changed)."""
    old = resumed.get("val_set")
    if old is None or old == val_set.fingerprint():
        return  # checkpoints from before the fingerprint existed cannot be checked
    if old.get("windows") != val_set.windows:
        why = (
            f"{old.get('windows'):,} windows there, {val_set.windows:,} now (train.eval_tokens "
            "changed?)"
        )
    else:
        why = "same size but other tokens (the data behind data.source changed?)"
    raise CheckpointError(
        f"cannot resume from {ckpt}: its validation curve was measured on another held-out set "
        f"({why}); resume with the run's own train.eval_tokens and data, or use another "
        "train.name"
    )
