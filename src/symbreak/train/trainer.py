"""The training loop behind ``symbreak train``: single process or DDP, resumable bit for bit.

One optimizer step is :class:`~symbreak.train.step.TrainStep` (``bench train`` times the same
object). The :class:`Trainer` runs in phases, each a method: resume point, build (data, model,
optimizer), restore (a checkpoint's weights, optimizer and loop state), open the outputs, then
per step: the step, evaluate (validation loss and the task metrics it is given), log, and
checkpoint. The loop's counters are one :class:`LoopState`.

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
import json
import math
import signal
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from symbreak.atomic import write_text_atomic
from symbreak.config import Config, flatten
from symbreak.data import (
    TrainBatches,
    load_run_data,
    run_loss_positions,
    val_batches,
)
from symbreak.device import autocast, resolve_dtype
from symbreak.errors import CheckpointError, ConfigError, TrainingError, write_failure
from symbreak.jsonio import write_json_atomic
from symbreak.model import GPT
from symbreak.model.loss import choose_loss_kernel
from symbreak.optim import build_optimizer, lr_at, set_lr
from symbreak.progress import Progress
from symbreak.provenance import provenance
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
from symbreak.train.heldout import check_same_val_set, held_out_set
from symbreak.train.init_from import init_model_from
from symbreak.train.lock import RunLockedError, read_holder, run_lock
from symbreak.train.loggers import build_loggers
from symbreak.train.metrics import MetricsWriter
from symbreak.train.noether_log import FILENAME as NOETHER_CSV
from symbreak.train.noether_log import NoetherLog
from symbreak.train.run_dir import PROVENANCE_FILE, check_run_dir, clear_attempt, only_lock
from symbreak.train.step import StepResult, TrainStep
from symbreak.train.validation import loss_sums

# Config keys that define what a run *is*: resuming with another value would silently train a
# different model or on other data. Everything else (budget, logging, lr, ...) may change.
IDENTITY_KEYS = ("model", "sb", "optim.name", "data.source", "train.seed", "train.batch_size")
# A metric computed from the model at every evaluation and logged beside the validation loss
# (e.g. greedy exact match on held-out addition problems): name -> function of the model. The
# trainer runs it under the run's autocast; every rank computes the same number.
TaskMetric = Callable[[GPT], float]


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
            self._train_loss_line(),
            self._val_loss_line(),
        ]
        if self.stopped_by:
            out.append(
                f"stopped by {self.stopped_by} after step {self.steps}; a checkpoint was written. "
                "Run the same command again to resume."
            )
        return out

    def _train_loss_line(self) -> str:
        if not math.isfinite(self.final_train_loss):
            return "train loss   none logged yet (the first log row comes at train.log_every)"
        return f"train loss   {self.final_train_loss:.4f} (mean of the last log interval)"

    def _val_loss_line(self) -> str:
        val_step = self.steps if self.val_step is None else self.val_step
        if val_step == 0:  # stopped before any evaluation after the start
            return f"val loss     {self.initial_val_loss:.4f} at start (not evaluated since)"
        return (
            f"val loss     {self.initial_val_loss:.4f} at start -> {self.final_val_loss:.4f} "
            f"at step {val_step} (best {self.best_val_loss:.4f})"
        )


def train(cfg: Config, task_metrics: Mapping[str, TaskMetric] | None = None) -> RunSummary:
    """Train ``cfg`` (resolved) into ``<train.out_dir>/<train.name>``; return a summary.

    ``task_metrics`` are logged to ``metrics.csv`` at every evaluation (one column each).
    :func:`symbreak.experiments.train_run` passes the ones a data source calls for, as
    ``symbreak train`` does. The run directory is locked (:mod:`symbreak.train.lock`) for the
    whole run: a second process training the same run stops at once with
    :class:`RunLockedError`.

    Example::

        from symbreak.data import load_config
        summary = train(load_config(overrides=["train.max_steps=20", "train.name=demo"]))
        print(summary.final_val_loss)
    """
    apply_threads(cfg.train.threads)
    run_dir = check_run_dir(cfg)
    out_existed = run_dir.parent.exists()
    env = init_distributed(cfg.train.device)
    try:
        with _locked(run_dir, env):
            return Trainer(cfg, env, task_metrics).run()
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

    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class LogWindow:
    """Training figures since the last log line: the mean loss and tokens/s come from here."""

    loss_sum: float = 0.0
    losses: int = 0  # steps with a finite loss
    tokens: int = 0
    seconds: float = 0.0
    # mixture of experts: sums of StepResult.moe over the steps with a finite loss
    moe_sum: list[float] = field(default_factory=list)

    def add(self, loss: float, tokens: int, seconds: float, moe: list[float] | None = None) -> None:
        if math.isfinite(loss):
            self.loss_sum += loss
            self.losses += 1
            if moe is not None:
                self.moe_sum = [
                    a + b for a, b in zip(self.moe_sum or [0.0] * len(moe), moe, strict=True)
                ]
        self.tokens += tokens
        self.seconds += seconds

    def moe_means(self) -> list[float] | None:
        return [v / self.losses for v in self.moe_sum] if self.moe_sum and self.losses else None

    def mean_loss(self) -> float:
        return self.loss_sum / self.losses if self.losses else float("nan")

    def tok_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def to_list(self) -> list[float | int]:
        """The form a checkpoint's ``state.json`` stores (``window``); a mixture of experts'
        sums follow the four numbers every run stores."""
        return [self.loss_sum, self.losses, self.tokens, self.seconds, *self.moe_sum]

    @classmethod
    def from_list(cls, w: list[Any]) -> LogWindow:
        return cls(w[0], w[1], w[2], w[3], [float(v) for v in w[4:]])


@dataclass
class LoopState:
    """The loop's counters: all a checkpoint needs besides weights, optimizer and RNG."""

    step: int = 0
    window: LogWindow = field(default_factory=LogWindow)
    nonfinite: int = 0  # non-finite losses skipped so far (train.skip_nonfinite)
    last_train_loss: float = float("nan")
    val_step: int = 0  # the step val_loss was measured at
    elapsed_s: float = 0.0  # wall time over every session of this run
    val_set: dict[str, Any] = field(default_factory=dict)  # the held-out set's fingerprint
    val_loss: float = float("nan")
    best_val_loss: float = float("nan")
    initial_val_loss: float = float("nan")

    def to_state(self) -> dict[str, Any]:
        """The keys of a checkpoint's ``state.json`` (in the order it has always had)."""
        return {
            "window": self.window.to_list(),
            "nonfinite": self.nonfinite,
            "last_train_loss": self.last_train_loss,
            "val_step": self.val_step,
            "elapsed_s": self.elapsed_s,
            "val_set": self.val_set,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "initial_val_loss": self.initial_val_loss,
        }

    @classmethod
    def from_state(cls, saved: dict[str, Any], val_set: dict[str, Any] | None = None) -> LoopState:
        """A checkpoint's state; ``val_set`` the fingerprint measured now (checked by then)."""
        return cls(
            step=saved["step"],
            window=LogWindow.from_list(saved["window"]),
            nonfinite=saved["nonfinite"],
            last_train_loss=saved["last_train_loss"],
            # Checkpoints from before these were recorded: the curve's last point, no time.
            val_step=saved.get("val_step", saved["step"]),
            elapsed_s=float(saved.get("elapsed_s", 0.0)),
            val_set=val_set if val_set is not None else saved.get("val_set", {}),
            val_loss=saved["val_loss"],
            best_val_loss=saved["best_val_loss"],
            initial_val_loss=saved["initial_val_loss"],
        )


class Trainer:
    """One training run of ``cfg`` on the ranks of ``env``; :meth:`run` returns its summary."""

    def __init__(
        self, cfg: Config, env: DistEnv, task_metrics: Mapping[str, TaskMetric] | None = None
    ) -> None:
        self.cfg, self.env = cfg, env
        t = cfg.train
        self.run_dir = Path(t.out_dir) / t.name
        self.device = env.device
        self.dtype = resolve_dtype(t.dtype, self.device)
        self.total = cfg.total_steps
        self.tokens_per_step = cfg.tokens_per_step
        self.micro = t.micro_batch_size or max(1, t.batch_size // env.world_size)
        self.task_metrics = dict(task_metrics or {})
        self.stopper = _StopOnSignal()
        self.notes: list[str] = []
        self.checkpoints_written = 0
        self.train_time = 0.0  # seconds inside training steps in this process
        self.fsdp = t.parallel == "fsdp" and env.enabled
        self.autocast = lambda: autocast(self.device, self.dtype)
        self.metrics: MetricsWriter | None = None
        self.noether: NoetherLog | None = None
        self.loggers: list[Any] = []

    def _say(self, line: str) -> None:
        """A start-up line on stdout, from rank 0 only."""
        if self.env.is_main:
            print(line, flush=True)

    # ---- the run -------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        # Signals are caught from the start: a SIGTERM during set-up still ends in a checkpoint.
        created = not self.run_dir.exists() or only_lock(self.run_dir)
        try:
            with self.stopper:
                return self._run()
        except BaseException:
            # A fresh run that fails before its first checkpoint (NaN loss, frozen ECD, a missing
            # optional package, Ctrl-C twice) leaves nothing to resume: remove what it wrote, so
            # the directory looks as it did before the command.
            if self.env.is_main and created and not self.checkpoints_written:
                clear_attempt(self.run_dir, remove_dir=True)
            raise

    def _run(self) -> RunSummary:
        ckpt, resumed = self._resume_point()  # every check before anything is written
        if resumed is None and self.env.is_main and clear_attempt(self.run_dir):
            self._say(f"{self.run_dir} holds no checkpoint: removed a failed attempt's files")
        if resumed is not None and resumed["step"] >= self.total:
            done = f"{self.run_dir} is already complete at step {resumed['step']}; nothing to do"
            return self._summary(
                LoopState.from_state(resumed),
                resumed.get("params", 0),
                tok_per_s=float("nan"),
                elapsed_s=0.0,
                notes=[done],
            )
        self._build(ckpt)
        state = self._restore(ckpt, resumed)
        self._open_outputs(state.step if resumed is not None else None)
        start_step = state.step
        try:
            if resumed is None:
                self._first_evaluation(state)
            self._loop(state)
        finally:
            self._close_outputs()
        self.model.unpin_biases()
        if self.fsdp:
            self.notes.append(_fsdp_memory_note(self.model, self.optimizer, self.env))
        return self._summary(
            state,
            self.model.num_params(),
            tok_per_s=(state.step - start_step) * self.tokens_per_step / max(self.train_time, 1e-9),
            elapsed_s=state.elapsed_s,
            val_step=state.val_step,
            resumed_from=start_step if resumed is not None else None,
            stopped_by=self.stopper.signal_name if state.step < self.total else None,
        )

    def _summary(self, state: LoopState, params: int, **kw: Any) -> RunSummary:
        kw["notes"] = self.notes + kw.get("notes", [])
        return RunSummary(
            run_dir=str(self.run_dir),
            steps=state.step,
            tokens=state.step * self.tokens_per_step,
            params=params,
            initial_val_loss=state.initial_val_loss,
            final_val_loss=state.val_loss,
            best_val_loss=state.best_val_loss,
            final_train_loss=state.last_train_loss,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            world_size=self.env.world_size,
            **kw,
        )

    # ---- set-up --------------------------------------------------------------------------------

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

    def _build(self, ckpt: Path | None) -> None:
        """Data, the model (its initial or checkpointed weights, sharded under FSDP), the
        optimizer, the training batches and the held-out set."""
        cfg, t, env = self.cfg, self.cfg.train, self.env
        torch.manual_seed(t.seed)
        data = load_run_data(cfg)
        self.model = model = GPT(cfg.model, cfg.sb).to(self.device)
        model.loss_kernel = resolve_loss_kernel(cfg, self.device, self.dtype)
        if model.loss_kernel == "compiled":
            self._say(
                f"loss kernel: compiled (train.loss_kernel={t.loss_kernel}); the first training "
                "step and the first evaluation each compile theirs, a few seconds"
            )
        if cfg.model.init_from and ckpt is None:  # a resumed run has its own weights
            init_model_from(model, cfg.model.init_from)
        if ckpt is not None:  # whole weights, before any sharding
            load_model_weights(model, ckpt)
        if self.fsdp:
            shard_model(model)
        elif t.parallel == "fsdp":
            self.notes.append(
                "note: train.parallel=fsdp in a single process has nothing to shard; the run "
                "is unsharded (start it with torchrun --nproc_per_node=N to shard)"
            )
        self.optimizer = build_optimizer(model, cfg.optim, seed=t.seed)
        positions = run_loss_positions(cfg)
        self.batches = TrainBatches(
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
        eval_rank, eval_world = (0, 1) if self.fsdp else (env.rank, env.world_size)
        self.held_out = val_batches(
            data.val,
            t.eval_tokens,
            self.micro,
            eval_rank,
            eval_world,
            how=t.eval_windows,
            positions=positions,
        )
        self.val_set = held_out_set(data.val, t.eval_tokens, t.eval_windows)

    def _restore(self, ckpt: Path | None, resumed: dict | None) -> LoopState:
        """The checkpoint's optimizer state, RNG and loop state (a fresh run starts from
        :class:`LoopState`'s zeros); then the training step."""
        cfg, t, model, optimizer = self.cfg, self.cfg.train, self.model, self.optimizer
        if resumed is not None:
            check_same_val_set(resumed, self.val_set, ckpt)
        self._say(self.val_set.describe(t.eval_tokens))
        state = LoopState(val_set=self.val_set.fingerprint())
        if resumed is not None:
            load_optimizer_state(
                optimizer,
                ckpt,
                resumed,
                prepare=(lambda sd: shard_optimizer_state(optimizer, sd)) if self.fsdp else None,
            )
            torch.set_rng_state(torch.tensor(resumed["rng"]["torch"], dtype=torch.uint8))
            if self.device.type == "cuda" and resumed["rng"].get("cuda"):
                torch.cuda.set_rng_state(torch.tensor(resumed["rng"]["cuda"], dtype=torch.uint8))
            state = LoopState.from_state(resumed, state.val_set)
        self.train_step = TrainStep(
            model,
            optimizer,
            autocast=self.autocast,
            env=self.env,
            grad_clip=cfg.optim.grad_clip,
            fsdp=self.fsdp,
            compile=t.compile,
        )
        return state

    def _open_outputs(self, resume_step: int | None) -> None:
        """Rank 0: the run directory, its loggers, config.toml, provenance.json, metrics.csv
        and noether.csv."""
        if not self.env.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.loggers = build_loggers(self.cfg, self.run_dir)  # may fail: before writing
        write_text_atomic(self.run_dir / "config.toml", self.cfg.to_toml())
        self._record_provenance(resume_step)
        self.metrics = MetricsWriter(
            self.run_dir / "metrics.csv",
            self._optimizer_columns() + self._moe_columns() + list(self.task_metrics),
            resume_step=resume_step,
            fresh=resume_step is None,
        )
        if self.cfg.train.log_noether:
            self.noether = NoetherLog(
                self.run_dir / NOETHER_CSV, self.model, self.optimizer, resume_step=resume_step
            )

    def _record_provenance(self, resume_step: int | None) -> None:
        """Append this start (or resume) of the run to provenance.json: the code, torch and
        device it ran with, from which step, and when. A fresh start begins a new list."""
        path = self.run_dir / PROVENANCE_FILE
        entries: list[Any] = []
        if resume_step is not None and path.is_file():
            try:
                entries = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                entries = []
            if not isinstance(entries, list):
                entries = []
        entries.append(
            {
                "step": resume_step or 0,
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "world_size": self.env.world_size,
                **provenance(str(self.device)),
            }
        )
        write_json_atomic(path, entries)

    def _close_outputs(self) -> None:
        for out in (self.metrics, self.noether, *self.loggers):
            if out is not None:
                out.close()

    def _optimizer_columns(self) -> list[str]:
        """Counters an optimizer keeps that metrics.csv logs (ECD's frozen steps)."""
        return ["frozen_steps"] if hasattr(self.optimizer, "frozen_steps") else []

    def _moe_columns(self) -> list[str]:
        """A mixture of experts' routing statistics, means over the log interval: the
        load-balancing term ``aux_loss`` and the router ``z_loss`` (both unscaled, means over
        layers; the training loss adds them times model.moe_aux_loss / model.moe_z_loss) and
        the fraction of token-slots each layer's experts got, ``load_L<layer>E<expert>``."""
        m = self.cfg.model
        if m.mlp != "moe":
            return []
        loads = [f"load_L{l}E{e}" for l in range(m.n_layer) for e in range(m.moe_experts)]
        return ["aux_loss", "z_loss", *loads]

    # ---- the loop ------------------------------------------------------------------------------

    def _loop(self, state: LoopState) -> None:
        cfg, t = self.cfg, self.cfg.train
        start, elapsed_before = time.perf_counter(), state.elapsed_s
        self.elapsed = lambda: elapsed_before + time.perf_counter() - start
        bar = Progress(
            total=self.total,
            initial=state.step,
            enabled=t.progress and self.env.is_main,
            desc=t.name,
            every=t.log_every,
        )
        try:
            for step in range(state.step, self.total):
                t0 = time.perf_counter()
                lr = lr_at(step, cfg.optim, self.total)
                set_lr(self.optimizer, lr)
                result = self.train_step(
                    step, self.batches.micro_batches(step), self.stopper.requested
                )
                self._check_step(step, result, state)
                dt = time.perf_counter() - t0
                self.train_time += dt
                state.step = step + 1
                state.window.add(result.loss, self.tokens_per_step, dt, result.moe)
                self._evaluate_and_log(state, lr, bar)
                bar.update(1)
                state.elapsed_s = self.elapsed()
                done = state.step
                if (
                    done == self.total
                    or result.stop
                    or (t.checkpoint_every and done % t.checkpoint_every == 0)
                ):
                    self._checkpoint(state)
                if result.stop:
                    break
        finally:
            bar.close()

    def _check_step(self, step: int, result: StepResult, state: LoopState) -> None:
        """A non-finite loss is skipped (up to train.skip_nonfinite) or stops the run; ECD that
        cannot move at its first step stops it too."""
        t = self.cfg.train
        if not result.updated:
            if state.nonfinite >= t.skip_nonfinite:
                raise TrainingError(
                    f"training loss is {result.loss} at step {step + 1}; stopped. The last "
                    "checkpoint is intact: lower optim.lr or set optim.grad_clip, or tolerate a "
                    "few bad batches with train.skip_nonfinite=N"
                )
            state.nonfinite += 1
            warnings.warn(
                f"non-finite loss at step {step + 1} skipped "
                f"({state.nonfinite} of {t.skip_nonfinite} allowed)",
                RuntimeWarning,
                stacklevel=1,
            )
        elif step == 0 and getattr(self.optimizer, "frozen_steps", 0):
            # F0 above the starting loss: nothing would ever move. (Later freezes are warned
            # about once and counted in metrics.csv.)
            raise TrainingError(
                f"ECD cannot move: optim.F0={self.cfg.optim.F0} is not below the loss "
                f"{result.loss:.4g} at the first step; set optim.F0 lower or optim.F0=auto"
            )

    # ---- evaluation and logging ----------------------------------------------------------------

    def _validate(self) -> float:
        sums = loss_sums(self.model, self.held_out, self.device, self.autocast())
        total, count = (sums if self.fsdp else self.env.all_reduce(sums)).tolist()
        return total / max(count, 1.0)

    def _task_values(self) -> dict[str, float]:
        out = {}
        for name, metric in self.task_metrics.items():
            with self.autocast():
                out[name] = metric(self.model)
        return out

    def _first_evaluation(self, state: LoopState) -> None:
        """The untrained model's validation loss: the curve's step 0."""
        val = self._validate()
        state.val_loss = state.best_val_loss = state.initial_val_loss = val
        if self.metrics:
            self.metrics.write(
                step=0,
                tokens=0,
                val_loss=val,
                lr=lr_at(0, self.cfg.optim, self.total),
                elapsed_s=0.0,
                **{k: 0 for k in self._optimizer_columns()},
                **self._task_values(),
            )

    def _evaluate_and_log(self, state: LoopState, lr: float, bar: Progress) -> None:
        """Validation at train.eval_every (and the last step); a log row at train.log_every."""
        t, done = self.cfg.train, state.step
        is_eval = done == self.total or bool(t.eval_every and done % t.eval_every == 0)
        if is_eval:
            state.val_loss = self._validate()
            state.val_step = done
            state.best_val_loss = min(state.best_val_loss, state.val_loss)
        if not (is_eval or done % t.log_every == 0):
            return
        state.last_train_loss = state.window.mean_loss()
        tok_s = state.window.tok_per_s()
        moe = state.window.moe_means()
        moe_row = dict(zip(self._moe_columns(), moe, strict=True)) if moe else {}
        row = dict(
            step=done,
            tokens=done * self.tokens_per_step,
            train_loss=state.last_train_loss,
            val_loss=state.val_loss if is_eval else None,
            lr=lr,
            tok_per_s=tok_s,
            elapsed_s=self.elapsed(),
            **{k: getattr(self.optimizer, k) for k in self._optimizer_columns()},
            **moe_row,
            **(self._task_values() if is_eval else {}),
        )
        if self.metrics:
            self.metrics.write(**row)
        scalars = self.noether.log(done) if self.noether else {}
        for lg in self.loggers:
            lg.log(done, {**row, **scalars})
        bar.set_postfix(
            loss=f"{state.last_train_loss:.3f}",
            val=f"{state.val_loss:.3f}",
            tok_s=f"{tok_s:,.0f}",
            **({"aux": f"{moe[0]:.3f}"} if moe else {}),
        )
        state.window = LogWindow()

    # ---- checkpoints ---------------------------------------------------------------------------

    def _checkpoint(self, state: LoopState) -> None:
        """Rank 0 writes; everyone waits, so no rank runs ahead of a checkpoint being written.
        A sharded model is gathered first, by every rank (a collective)."""
        model, optimizer = self.model, self.optimizer
        gathered: dict[str, Any] = {}
        if is_sharded(model):
            keep = self.env.is_main  # only the writer holds the full copy
            gathered = {
                "model_state": full_model_state(model, keep),
                "optimizer_state": full_optimizer_state(optimizer, keep),
            }
        if self.env.is_main:
            self._write_checkpoint(state, gathered)
        self.env.barrier()

    def _write_checkpoint(self, state: LoopState, gathered: dict[str, Any]) -> None:
        step = state.step
        rng = {"torch": torch.get_rng_state().tolist()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device).tolist()
        payload = {
            **state.to_state(),
            "tokens": step * self.tokens_per_step,
            "rng": rng,
            "params": self.model.num_params(),
            "world_size": self.env.world_size,
            "config": self.cfg.to_dict(),
        }
        try:
            save_checkpoint(self.run_dir, step, self.model, self.optimizer, payload, **gathered)
        except OSError as e:
            retry = (
                "run the same command to resume from the previous checkpoint, which is intact"
                if (self.run_dir / "checkpoints" / LATEST).exists()
                else "run the command again (no checkpoint was written yet)"
            )
            raise TrainingError(
                write_failure(f"checkpoint step {step} in {self.run_dir / 'checkpoints'}", e, retry)
            ) from None
        self.checkpoints_written += 1
        prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)


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
