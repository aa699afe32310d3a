"""Evaluate, compare and sample trained runs: what ``symbreak eval``, ``compare`` and ``sample``
do, as plain functions.

Cheap checks (options, puzzle files, the output paths, matplotlib for the compare chart) run
before any model is loaded, so mistakes fail in a second, not after minutes of scoring. Errors
are :class:`~symbreak.errors.SymbreakError` with one line saying what is wrong.

Outputs: :func:`evaluate_run` writes ``<RUN_DIR>/eval/<checkpoint>.json`` (e.g.
``eval/step_00001000.json``; another call with other options overwrites it - the JSON records
the options); ``out=DIR`` (an existing directory) writes ``DIR/<checkpoint>.json``.
:func:`compare_runs` writes ``compare.json`` and ``compare.png`` into one directory: ``out=DIR``,
by default ``compare-<run1>-vs-<run2>...`` next to the first run (never the current
directory); ``out=NAME.json`` (or ``NAME.png``) writes ``NAME.json`` and ``NAME.png`` side by
side. The two outputs never share a path.

Progress lines (which run, which checkpoint, the validation loss) go to ``echo`` as they
happen; pass ``echo=print`` to see them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from symbreak import __version__
from symbreak.device import resolve_device
from symbreak.errors import DataError, SymbreakError
from symbreak.eval import reasoning_gym, report
from symbreak.eval.options import DEFAULT_BATCH_SIZE, DEFAULT_PER_CATEGORY
from symbreak.eval.puzzles import CATEGORIES, SUITE_VERSION, Item, builtin_suite, read_puzzles
from symbreak.eval.sample import Sample, generate
from symbreak.eval.scoring import ScoreRun, Summary, paired_differences, score_items, summarize
from symbreak.outputs import output_dir, output_file, portable_path, stamp
from symbreak.plotting import require_matplotlib
from symbreak.provenance import provenance
from symbreak.runs import Run, load_run

Echo = Callable[[str], None]
PathLike = str | Path


def _silent(_line: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """What :func:`evaluate_run` (or :func:`evaluate_addition_run`) measured.

    ``data`` is the JSON document ``symbreak eval`` writes (also readable as ``result[key]``);
    ``path`` where it was written (None with ``write=False``); ``score`` and ``summary`` the
    puzzle scores (None without puzzle items, and for the addition task).
    """

    data: dict[str, Any]
    path: Path | None = None
    score: ScoreRun | None = None
    summary: Summary | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


@dataclass
class CompareResult:
    """What :func:`compare_runs` measured: ``data`` is the JSON ``symbreak compare`` writes."""

    data: dict[str, Any]
    names: list[str]
    summaries: list[Summary]
    diffs: list[Any]  # per run after the first: paired differences to the first
    json_path: Path
    png: Path | None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


def collect_items(
    suite: str = "builtin",
    suite_seed: int = 0,
    per_category: int = DEFAULT_PER_CATEGORY,
    puzzles: Sequence[PathLike] = (),
) -> list[Item]:
    """The suite (``builtin``, ``reasoning-gym:TASK[,TASK...]`` or ``none``) followed by the
    items of every puzzle file.

    >>> items = collect_items("builtin", suite_seed=0, per_category=2)
    >>> len(items) == 2 * len(CATEGORIES)
    True
    """
    rg_tasks = reasoning_gym.parse_suite(suite)
    if rg_tasks is not None:
        items = reasoning_gym.reasoning_gym_items(rg_tasks, suite_seed, per_category)
        builtin = set(rg_tasks)
    elif suite == "builtin":
        items = builtin_suite(suite_seed, per_category)
        builtin = set(CATEGORIES)
    elif suite == "none":
        items, builtin = [], set()
    else:
        raise SymbreakError(
            f"--suite {suite!r} is not a suite: builtin, none or reasoning-gym:TASK[,TASK...]"
        )
    for path in puzzles:
        extra = read_puzzles(path)
        for item in extra:
            if item.category in builtin:
                raise DataError(
                    f"{item.source} (file:line): category '{item.category}' is also a "
                    "category of the suite; rename it or pass --suite none"
                )
        items += extra
    kinds: dict[str, Item] = {}
    for item in items:  # files are checked one by one; a category may span files
        first = kinds.setdefault(item.category, item)
        if first.kind != item.kind:
            raise DataError(
                f"{item.source} (file:line): category '{item.category}' holds {item.kind} "
                f"items here but {first.kind} items at {first.source}; use another name"
            )
    return items


def _load(run_dir: PathLike, checkpoint: str, sb_eval: str | None, device: str) -> Run:
    return load_run(run_dir, checkpoint, sb_eval, resolve_device(device))


def _require_gpt2_vocabulary(run: Run) -> None:
    """Puzzles and prompts are GPT-2 BPE text; a character-level addition run cannot read them."""
    if run.cfg.data.source == "addition":
        raise SymbreakError(
            f"{run.run_dir} was trained on data.source=addition (13 characters), not GPT-2 "
            "tokens: use `symbreak eval RUN_DIR --task addition`"
        )


def describe(run: Run) -> str:
    """One line: the run, its checkpoint, its shape, ``sb.eval`` and the device."""
    c = run.cfg.model
    return (
        f"run {run.run_dir}: checkpoint {run.checkpoint.name}, L{c.n_layer} H{c.n_head} "
        f"C{c.n_embd} T{c.block_size}, sb.eval={run.cfg.sb.eval}, device {run.device}"
    )


def validation(run: Run) -> dict[str, Any]:
    """Validation loss on the run's own held-out batches, next to the recorded one."""
    from symbreak.data import load_run_data, run_loss_positions, val_batches
    from symbreak.targets import IGNORE_INDEX
    from symbreak.train.validation import evaluate_loss

    cfg = run.cfg
    data = load_run_data(cfg)
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    positions = run_loss_positions(cfg)
    batches = val_batches(
        data.val, cfg.train.eval_tokens, micro, how=cfg.train.eval_windows, positions=positions
    )
    t0 = time.perf_counter()
    loss = evaluate_loss(run.model, batches, run.device)
    tokens = sum(int((y != IGNORE_INDEX).sum()) for _, y in batches)
    return {
        "val_loss": loss,
        "recorded_val_loss": run.recorded_val_loss,
        "tokens": tokens,
        "source": cfg.data.source,
        "seconds": time.perf_counter() - t0,
    }


def validation_line(val: dict[str, Any]) -> str:
    rec = val["recorded_val_loss"]
    recorded = f" (recorded when the checkpoint was written: {rec:.4f})" if rec is not None else ""
    return f"validation loss {val['val_loss']:.4f} on {val['tokens']:,} held-out tokens{recorded}"


def default_eval_name(checkpoint_name: str, suite: str, puzzles: Sequence[PathLike]) -> str:
    """``<checkpoint>.json`` for the built-in suite alone (what ``report --eval`` reads), and
    ``<checkpoint>.<suite and puzzle files>.json`` for anything else, so one suite's results
    never overwrite another's (``step_00000200.reasoning-gym-syllogism.json``)."""
    if suite == "builtin" and not puzzles:
        return f"{checkpoint_name}.json"
    parts = [] if suite == "none" else [re.sub(r"[^A-Za-z0-9_.+=-]+", "-", suite)]
    parts += [Path(p).stem for p in puzzles]
    return f"{checkpoint_name}.{'+'.join(parts) or 'val'}.json"


def _options(
    checkpoint: str,
    suite: str,
    suite_seed: int,
    per_category: int,
    puzzles: Sequence[PathLike],
    batch_size: int,
    sb_eval: str | None,
    device: str,
) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint,
        "suite": suite,
        "suite_version": _suite_version(suite),
        "suite_seed": suite_seed,
        "per_category": per_category,
        "puzzles": [str(p) for p in puzzles],
        "batch_size": batch_size,
        "sb_eval_override": sb_eval,
        "device": device,
    }


def _suite_version(suite: str) -> int | str | None:
    if suite == "builtin":
        return SUITE_VERSION
    if reasoning_gym.parse_suite(suite) is not None:
        return f"reasoning-gym=={reasoning_gym.rg_version()}"
    return None


def _portable(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` with its run, checkpoint and chart paths relative to ``base``, the directory
    the JSON goes to, so a results folder can be moved whole (the dict is changed in place)."""
    for entry in [data, *data.get("runs", [])]:
        for key in ("run_dir", "checkpoint", "chart"):
            if isinstance(entry.get(key), str):
                entry[key] = portable_path(entry[key], base)
    return data


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "sb_eval": run.cfg.sb.eval,
        "device": str(run.device),
        "block_size": run.cfg.model.block_size,
        "recorded_val_loss": run.recorded_val_loss,
    }


def _score(run: Run, items: list[Item], batch_size: int) -> tuple[ScoreRun, Summary]:
    run.require_gpt2("the puzzle suite")
    score = score_items(run.model, items, run.device, batch_size, run.cfg.model.block_size)
    return score, summarize(score.results)


def _check_items(items: list[Item], val: bool) -> None:
    if not items and not val:
        raise SymbreakError(
            "nothing to evaluate: --suite none without --puzzles FILE.jsonl or --val; "
            "pass one of them"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


def evaluate_run(
    run_dir: PathLike,
    *,
    checkpoint: str = "latest",
    suite: str = "builtin",
    suite_seed: int = 0,
    per_category: int = DEFAULT_PER_CATEGORY,
    puzzles: Sequence[PathLike] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    val: bool = False,
    sb_eval: str | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    write: bool = True,
    echo: Echo = _silent,
) -> EvalResult:
    """Load a run's checkpoint strictly and score it on the puzzle suite and/or puzzle files
    (Top-1, Top-5, rank and cross-entropies with 95% confidence intervals), and with
    ``val=True`` measure its validation loss too. What ``symbreak eval RUN_DIR`` does.

    ``checkpoint``: ``latest``, ``best`` or a step number. ``sb_eval`` overrides the run's
    ``sb.eval``. The JSON goes to ``out`` (default ``RUN_DIR/eval/<checkpoint>.json`` for the
    built-in suite, ``<checkpoint>.<suite>.json`` for others: :func:`default_eval_name`; an
    existing directory holds that name); ``write=False`` writes nothing.

    >>> from symbreak.eval import evaluate_run
    >>> result = evaluate_run("runs/demo", per_category=20, val=True)  # doctest: +SKIP
    >>> result["overall"]["acc"]["macro"]["mean"], result.path  # doctest: +SKIP
    (0.31, PosixPath('runs/demo/eval/step_00000200.json'))
    """
    run_dir = Path(run_dir)
    items = collect_items(suite, suite_seed, per_category, puzzles)
    _check_items(items, val)
    if out is not None and write:
        output_file(out, "eval.json", "--out", kind="eval")  # refused now, not after scoring
    run = _load(run_dir, checkpoint, sb_eval, device)
    if items:  # --suite none --val alone works for any run
        _require_gpt2_vocabulary(run)
    echo(describe(run))
    data: dict[str, Any] = {
        "symbreak_version": __version__,
        "provenance": provenance(str(run.device)),
        "created": _now(),
        **_run_json(run),
        "options": _options(
            checkpoint, suite, suite_seed, per_category, puzzles, batch_size, sb_eval, device
        ),
        "methods": report.METHODS,
        "validation": None,
    }
    if val:
        data["validation"] = validation(run)
        echo(validation_line(data["validation"]))
    score = summary = None
    if items:
        score, summary = _score(run, items, batch_size)
        data["timing"] = {
            "seconds": score.seconds,
            "items": len(score.results),
            "sequences": score.sequences,
            "tokens": score.tokens,
            "batch_size": score.batch_size,
            "items_per_s": len(score.results) / max(score.seconds, 1e-9),
        }
        data["truncated_items"] = score.truncated_items
        data.update(report.summary_json(summary))
        data["items"] = [report.item_json(r) for r in score.results]
    path = None
    if write:
        name = default_eval_name(run.checkpoint.name, suite, puzzles)
        path = output_file(out or run_dir / "eval" / name, name, "--out", kind="eval")
        report.write_json(path, stamp(_portable(data, path.parent), "eval"))
    return EvalResult(data, path, score, summary)


def evaluate_addition_run(
    run_dir: PathLike,
    *,
    checkpoint: str = "latest",
    problems: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    sb_eval: str | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    write: bool = True,
    echo: Echo = _silent,
) -> EvalResult:
    """Exact match and per-digit accuracy of greedy answers to a ``data.source=addition``
    run's held-out problems (the first ``problems`` of them; None: all). What ``symbreak eval
    RUN_DIR --task addition`` does. The JSON goes to ``out`` (a file, or a directory holding
    ``addition_<checkpoint>.json``; default the directory ``RUN_DIR/eval``).

    >>> from symbreak.eval import evaluate_addition_run
    >>> result = evaluate_addition_run("runs/add", problems=500)  # doctest: +SKIP
    >>> result["exact_match"]["mean"]  # doctest: +SKIP
    0.998
    """
    from symbreak.eval.addition import evaluate_addition

    run_dir = Path(run_dir)
    # out FILE, or a directory (default RUN_DIR/eval) to hold addition_<checkpoint>.json;
    # a bad out fails here, before the scoring
    out_dir, out_file = run_dir / "eval", None
    if out is not None and Path(out).expanduser().is_dir():
        out_dir = Path(out).expanduser()
    elif out is not None and write:
        out_file = output_file(out, "addition.json", "--out", kind="eval --task addition")
    run = _load(run_dir, checkpoint, sb_eval, device)
    echo(describe(run))
    result = evaluate_addition(run.model, run.cfg, problems, batch_size)
    data = {
        "symbreak_version": __version__,
        "provenance": provenance(str(run.device)),
        "created": _now(),
        **_run_json(run),
        **result,
    }
    path = None
    if write:
        path = out_file or out_dir / f"addition_{run.checkpoint.name}.json"
        report.write_json(path, stamp(_portable(data, path.parent), "eval --task addition"))
    return EvalResult(data, path)


def cot_eval_name(checkpoint_name: str, shots: int = 0) -> str:
    """``<checkpoint>.cot-arithmetic.json`` (``.cot-arithmetic-3shot.json`` with shots): the
    task's own file beside the suite's, what ``report --task cot-arithmetic`` reads."""
    return f"{checkpoint_name}.cot-arithmetic{f'-{shots}shot' if shots else ''}.json"


def evaluate_cot_run(
    run_dir: PathLike,
    *,
    checkpoint: str = "latest",
    problems: int | None = None,
    batch_size: int = 64,
    shots: int = 0,
    sb_eval: str | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    write: bool = True,
    echo: Echo = _silent,
) -> EvalResult:
    """Greedy chain-of-thought answers to the held-out ``cot-arithmetic`` problems, scored by
    exact match (:mod:`symbreak.eval.cot`). What ``symbreak eval RUN_DIR --task
    cot-arithmetic`` does. The JSON goes to ``out`` (a file, or a directory), by default
    ``RUN_DIR/eval/<checkpoint>.cot-arithmetic.json``.

    >>> from symbreak.eval import evaluate_cot_run
    >>> result = evaluate_cot_run("runs/tiny-cot-arithmetic", problems=200)  # doctest: +SKIP
    >>> result["accuracy"]["overall"]["mean"]  # doctest: +SKIP
    0.41
    """
    from symbreak.eval.cot import evaluate_cot

    run_dir = Path(run_dir)
    out_dir, out_file = run_dir / "eval", None
    if out is not None and Path(out).expanduser().is_dir():
        out_dir = Path(out).expanduser()
    elif out is not None and write:
        out_file = output_file(out, "cot-arithmetic.json", "--out")
    run = _load(run_dir, checkpoint, sb_eval, device)
    echo(describe(run))
    result = evaluate_cot(run.model, run.cfg, run.tokenizer, problems, batch_size, shots)
    data = {
        "symbreak_version": __version__,
        "provenance": provenance(str(run.device)),
        "created": _now(),
        **_run_json(run),
        "options": {
            "checkpoint": checkpoint,
            "problems": problems,
            "shots": shots,
            "sb_eval": sb_eval,
            "device": device,
        },
        **result,
    }
    path = None
    if write:
        path = out_file or out_dir / cot_eval_name(run.checkpoint.name, shots)
        report.write_json(path, data)
    return EvalResult(data, path)


# --------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------


def _unique_names(run_dirs: Sequence[Path]) -> list[str]:
    names = [p.name for p in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{p.name}" for i, p in enumerate(run_dirs)]


def compare_outputs(
    out: Path | None, run_dirs: Sequence[Path], plot: bool = True
) -> tuple[Path, Path | None]:
    """(JSON path, PNG path or None) of :func:`compare_runs` (see the module docstring)."""
    if out is None:
        names = [re.sub(r"[^\w.-]+", "_", p.resolve().name) for p in run_dirs]
        name = "compare-" + "-vs-".join(names)
        if len(name) > 100:
            name = f"compare-{names[0][:40]}-and-{len(names) - 1}-more"
        out = run_dirs[0].resolve().parent / name
    if out.suffix in (".json", ".png") and not out.is_dir():
        json_path = output_file(out.with_suffix(".json"), "compare.json", "--out", kind="compare")
        png = json_path.with_suffix(".png")
    else:
        directory = output_dir(out, "--out")
        json_path = output_file(directory / "compare.json", "compare.json", "--out", kind="compare")
        png = directory / "compare.png"
    if png.is_dir():
        raise SymbreakError(f"--out: the chart's path {png} is a directory; choose another --out")
    return json_path, png if plot else None


def compare_runs(
    run_dirs: Sequence[PathLike],
    *,
    checkpoint: str = "latest",
    suite: str = "builtin",
    suite_seed: int = 0,
    per_category: int = DEFAULT_PER_CATEGORY,
    puzzles: Sequence[PathLike] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    val: bool = False,
    sb_eval: str | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    plot: bool = True,
    echo: Echo = _silent,
) -> CompareResult:
    """Score every run on the same items; each run's difference to the first comes with a
    paired bootstrap 95% CI over items. Writes ``compare.json`` and (``plot=True``, needs
    matplotlib) ``compare.png``; see the module docstring for where. What ``symbreak compare``
    does.

    >>> from symbreak.eval import compare_runs
    >>> res = compare_runs(["runs/sym", "runs/bq"], per_category=50)  # doctest: +SKIP
    >>> res.names, res.json_path.name  # doctest: +SKIP
    (['sym', 'bq'], 'compare.json')
    """
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise SymbreakError("compare needs at least two run directories")
    json_out, png = compare_outputs(Path(out) if out is not None else None, dirs, plot=plot)
    if plot:
        require_matplotlib("compare draws its chart", "pass --no-plot")
    items = collect_items(suite, suite_seed, per_category, puzzles)
    if not items:
        raise SymbreakError("nothing to compare: --suite none without --puzzles FILE.jsonl")
    names = _unique_names(dirs)
    runs_json, results, summaries, devices = [], [], [], []
    for name, run_dir in zip(names, dirs, strict=True):
        run = _load(run_dir, checkpoint, sb_eval, device)
        devices.append(str(run.device))
        _require_gpt2_vocabulary(run)
        echo(describe(run))
        entry = {"name": name, **_run_json(run), "validation": None}
        if val:
            entry["validation"] = validation(run)
            echo("  " + validation_line(entry["validation"]))
        score, summary = _score(run, items, batch_size)
        echo("  " + report.timing_line(score))
        entry["seconds"] = score.seconds
        runs_json.append(entry)
        results.append(score.results)
        summaries.append(summary)
        del run  # free the model before loading the next one
    diffs = [paired_differences(results[0], other) for other in results[1:]]
    data = {
        "symbreak_version": __version__,
        "provenance": provenance(devices[0]),
        "created": _now(),
        "options": _options(
            checkpoint, suite, suite_seed, per_category, puzzles, batch_size, sb_eval, device
        ),
        **report.compare_json(runs_json, summaries, diffs),
        "chart": None,
    }
    if png is not None:
        report.plot_compare(png, names, summaries)
        data["chart"] = str(png)
    report.write_json(json_out, stamp(_portable(data, json_out.parent), "compare"))
    return CompareResult(data, names, summaries, diffs, json_out, png)


def existing_cot_eval(
    run_dir: Path, checkpoint: str, problems: int | None, shots: int, sb_eval: str | None
) -> EvalResult | None:
    """The run's eval JSON for this checkpoint when it was made with the same options (what
    ``report --task cot-arithmetic`` or an earlier ``eval`` wrote), else None."""
    from symbreak.runs import find_checkpoint

    try:
        path = run_dir / "eval" / cot_eval_name(find_checkpoint(run_dir, checkpoint).name, shots)
        data = json.loads(path.read_text())
        opts = data["options"]
        same = (opts.get("problems", "?"), opts.get("shots"), opts.get("sb_eval"))
        return EvalResult(data, path) if same == (problems, shots, sb_eval) else None
    except (SymbreakError, OSError, ValueError, KeyError, TypeError):
        return None


def compare_cot_runs(
    run_dirs: Sequence[PathLike],
    *,
    checkpoint: str = "latest",
    problems: int | None = None,
    batch_size: int = 64,
    shots: int = 0,
    sb_eval: str | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    echo: Echo = _silent,
) -> dict[str, Any]:
    """Two runs on the same held-out ``cot-arithmetic`` problems, paired by item
    (:func:`symbreak.eval.cot.compare_cot`); each run's own eval JSON is written as
    :func:`evaluate_cot_run` writes it, and ``compare.json`` where :func:`compare_runs` would
    put it. What ``symbreak compare A B --task cot-arithmetic`` does."""
    from symbreak.eval.cot import compare_cot

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) != 2:
        raise SymbreakError(f"--task cot-arithmetic compares exactly two runs, got {len(dirs)}")
    json_out, _ = compare_outputs(Path(out) if out is not None else None, dirs, plot=False)
    names = _unique_names(dirs)
    results = []
    for d in dirs:
        done = existing_cot_eval(d, checkpoint, problems, shots, sb_eval)
        if done is not None:
            echo(f"{d}: reusing {done.path}")
            results.append(done)
            continue
        res = evaluate_cot_run(
            d,
            checkpoint=checkpoint,
            problems=problems,
            batch_size=batch_size,
            shots=shots,
            sb_eval=sb_eval,
            device=device,
            echo=echo,
        )
        echo(f"  wrote {res.path}")
        results.append(res)
    table = compare_cot(results[0].data, results[1].data)
    data = {
        "symbreak_version": __version__,
        "provenance": provenance(results[0].data["provenance"].get("device", device)),
        "created": _now(),
        "task": "cot-arithmetic",
        "names": names,
        "runs": [
            {"name": n, "run_dir": str(d), "eval": str(r.path)}
            for n, d, r in zip(names, dirs, results, strict=True)
        ],
        "options": {
            "checkpoint": checkpoint,
            "problems": problems,
            "shots": shots,
            "sb_eval": sb_eval,
        },
        "method": "differences are second run minus first over the problems both scored: "
        "accuracy difference with a paired percentile bootstrap 95% interval (1000 resamples "
        "of items), McNemar's exact two-sided test on the discordant problems "
        "(scipy.stats.binomtest), and the paired difference of the reference chain's "
        "teacher-forced log-probability",
        "differences": table,
    }
    report.write_json(json_out, data)
    data["path"] = str(json_out)
    return data


# --------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------


def sample_run(
    run_dir: PathLike,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = 50,
    seed: int = 0,
    checkpoint: str = "latest",
    sb_eval: str | None = None,
    device: str = "auto",
    echo: Echo = _silent,
) -> Sample:
    """Continue ``prompt`` with a trained run's model (seeded; stops at end-of-text; the
    context is cropped to ``model.block_size``). ``top_k`` None keeps every token;
    ``temperature`` 0 is greedy decoding. What ``symbreak sample`` does.

    >>> from symbreak.eval import sample_run
    >>> s = sample_run("runs/demo", "The key", max_new_tokens=20, seed=1)  # doctest: +SKIP
    >>> print("The key" + s.text)  # doctest: +SKIP
    """
    run = _load(run_dir, checkpoint, sb_eval, device)
    _require_gpt2_vocabulary(run)
    echo(describe(run))
    return generate(
        run.model,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        block_size=run.cfg.model.block_size,
        device=run.device,
        tokenizer=run.tokenizer,
    )
