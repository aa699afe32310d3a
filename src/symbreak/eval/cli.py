"""The ``eval``, ``compare`` and ``sample`` sub-commands: ``register(subparsers)`` adds them.

Handlers return an exit code and let :class:`~symbreak.errors.SymbreakError` propagate (the
top-level ``main`` prints it as one ``error:`` line). Cheap checks (options, puzzle files,
matplotlib for ``compare``) run before any model is loaded, so mistakes fail in a second,
not after minutes of scoring.

Defaults: ``eval`` writes ``<RUN_DIR>/eval/<checkpoint>.json`` (e.g. ``eval/step_00001000.json``;
re-running with other options overwrites it - the JSON records the options); ``--out DIR``
(an existing directory) writes ``DIR/<checkpoint>.json``. ``compare`` writes ``compare.json``
and ``compare.png`` into one directory: ``--out DIR``, by default ``compare-<run1>-vs-<run2>...``
next to the first run (never the current directory); ``--out NAME.json`` (or ``NAME.png``)
writes ``NAME.json`` and ``NAME.png`` side by side. The two outputs never share a path.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from symbreak import __version__
from symbreak.cli.argtypes import float_range, int_range, seed
from symbreak.device import resolve_device
from symbreak.errors import DataError, SymbreakError
from symbreak.eval import puzzles, reasoning_gym, report
from symbreak.eval.puzzles import CATEGORIES, SUITE_VERSION, Item, builtin_suite, read_puzzles
from symbreak.eval.scoring import ScoreRun, Summary, paired_differences, score_items, summarize
from symbreak.outputs import output_dir, output_file
from symbreak.runs import SB_EVAL_CHOICES, Run, load_run

MATPLOTLIB_PIN = "matplotlib==3.11.2"


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


_positive = int_range(1)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="latest|best|STEP",
        help="which checkpoint: latest (default), best (lowest val_loss recorded in its "
        "state.json) or a step number",
    )
    p.add_argument(
        "--sb-eval",
        choices=SB_EVAL_CHOICES,
        default=None,
        help="symmetry-breaking biases at evaluation (default: the run's sb.eval)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, cuda:N"
    )


def _suite(value: str) -> str:
    if value in ("builtin", "none"):
        return value
    try:
        if reasoning_gym.parse_suite(value) is not None:
            return value
    except SymbreakError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--suite {value!r}: ")) from None
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a suite: builtin, none or reasoning-gym:TASK[,TASK...]"
    )


def _add_suite_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--puzzles",
        action="append",
        default=[],
        metavar="FILE.jsonl",
        help="score a puzzle file too (JSON Lines: category, prompt, and expected or compare); "
        "may be repeated",
    )
    p.add_argument(
        "--suite",
        type=_suite,
        default="builtin",
        metavar="builtin|none|reasoning-gym:TASK[,TASK...]",
        help="the built-in procedural suite (default), none, or seeded reasoning-gym tasks "
        "(optional extra: pip install 'symbreak[reasoning-gym]')",
    )
    p.add_argument(
        "--suite-seed",
        type=seed,
        default=0,
        metavar="N",
        help="seed of the built-in suite (or reasoning-gym's create_dataset), 0 to 2^63-1 "
        "(default 0)",
    )
    p.add_argument(
        "--per-category",
        type=_positive,
        metavar="N",
        default=puzzles.DEFAULT_PER_CATEGORY,
        help=f"items per built-in category or reasoning-gym task "
        f"(default {puzzles.DEFAULT_PER_CATEGORY})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        metavar="N",
        default=32,
        help="sequences per forward pass (default 32); results do not depend on it",
    )
    p.add_argument(
        "--val",
        action="store_true",
        help="also measure validation loss on the run's held-out data (data.source, "
        "model.block_size, train.eval_tokens)",
    )


def register(subparsers: Any) -> None:
    """Add ``eval``, ``compare`` and ``sample`` to an ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "eval",
        help="score a trained run on the puzzle suite (and validation loss)",
        description="Load a run's checkpoint strictly and score it on the built-in puzzle "
        "suite (8 categories x 200 seeded items) and/or puzzle files: Top-1, Top-5, rank and "
        "cross-entropies with 95% confidence intervals. Prints a table and writes JSON.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    _add_model_options(p)
    _add_suite_options(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="where to write the JSON (default: RUN_DIR/eval/<checkpoint>.json); an existing "
        "directory: the JSON goes inside it as <checkpoint>.json",
    )
    p.add_argument(
        "--task",
        choices=("puzzles", "addition"),
        default="puzzles",
        help="puzzles (default: the suite and --puzzles files) or addition: exact-match and "
        "per-digit accuracy of greedy answers to the run's held-out addition problems "
        "(data.source=addition; JSON default RUN_DIR/eval/addition_<checkpoint>.json)",
    )
    p.add_argument(
        "--problems",
        type=_positive,
        default=None,
        metavar="N",
        help="--task addition: score the first N validation problems (default: all)",
    )
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "compare",
        help="score several runs on the same items, side by side with differences",
        description="Score every run on the same items and show the metrics side by side, "
        "with each run's difference to the first (paired bootstrap 95% CI over items) and a "
        "PNG bar chart per category.",
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", type=Path, nargs="+", help="two or more runs")
    _add_model_options(p)
    _add_suite_options(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for compare.json and compare.png (created if missing; default: "
        "compare-<run1>-vs-<run2>... next to the first run). A name ending in .json or .png "
        "names the files themselves: NAME.json and NAME.png side by side",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG chart")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "sample",
        help="generate text from a trained run",
        description="Continue a prompt with a trained model (seeded; stops at end-of-text; "
        "the context is cropped to model.block_size).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    p.add_argument("--prompt", required=True, help="text to continue ('' starts a document)")
    p.add_argument("--max-new-tokens", type=int_range(0), default=100, help="default 100")
    p.add_argument(
        "--temperature",
        type=float_range(0.0),
        default=1.0,
        help="a finite number >= 0 (default 1.0); 0 is greedy decoding",
    )
    p.add_argument(
        "--top-k", type=int_range(0), default=50, help="default 50; 0 keeps every token"
    )
    p.add_argument("--seed", type=seed, default=0, help="sampling seed, 0 to 2^63-1 (default 0)")
    _add_model_options(p)
    p.set_defaults(func=cmd_sample)


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


def collect_items(args: argparse.Namespace) -> list[Item]:
    """The suite (built-in, reasoning-gym's, or none) followed by every ``--puzzles`` file."""
    rg_tasks = reasoning_gym.parse_suite(args.suite)
    if rg_tasks is not None:
        items = reasoning_gym.reasoning_gym_items(rg_tasks, args.suite_seed, args.per_category)
        builtin = set(rg_tasks)
    elif args.suite == "builtin":
        items = builtin_suite(args.suite_seed, args.per_category)
        builtin = set(CATEGORIES)
    else:
        items, builtin = [], set()
    for path in args.puzzles:
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


def _load(args: argparse.Namespace, run_dir: Path) -> Run:
    return load_run(run_dir, args.checkpoint, args.sb_eval, resolve_device(args.device))


def _require_gpt2_vocabulary(run: Run) -> None:
    """Puzzles and prompts are GPT-2 BPE text; a character-level addition run cannot read them."""
    if run.cfg.data.source == "addition":
        raise SymbreakError(
            f"{run.run_dir} was trained on data.source=addition (13 characters), not GPT-2 "
            "tokens: use `symbreak eval RUN_DIR --task addition`"
        )


def _describe(run: Run) -> str:
    c = run.cfg.model
    return (
        f"run {run.run_dir}: checkpoint {run.checkpoint.name}, L{c.n_layer} H{c.n_head} "
        f"C{c.n_embd} T{c.block_size}, sb.eval={run.cfg.sb.eval}, device {run.device}"
    )


def _validation(run: Run) -> dict[str, Any]:
    """Validation loss on the run's own held-out batches, next to the recorded one."""
    from symbreak.data import addition_spec, load_data, run_loss_positions, val_batches
    from symbreak.targets import IGNORE_INDEX
    from symbreak.train.validation import evaluate_loss

    cfg = run.cfg
    data = load_data(
        cfg.data.source,
        cfg.model.block_size,
        cfg.model.vocab_size,
        cache_dir=Path(cfg.data.cache_dir) if cfg.data.cache_dir else None,
        addition=addition_spec(cfg.data),
    )
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


def _validation_line(val: dict[str, Any]) -> str:
    rec = val["recorded_val_loss"]
    recorded = f" (recorded when the checkpoint was written: {rec:.4f})" if rec is not None else ""
    return f"validation loss {val['val_loss']:.4f} on {val['tokens']:,} held-out tokens{recorded}"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "checkpoint": args.checkpoint,
        "suite": args.suite,
        "suite_version": _suite_version(args.suite),
        "suite_seed": args.suite_seed,
        "per_category": args.per_category,
        "puzzles": [str(p) for p in args.puzzles],
        "batch_size": args.batch_size,
        "sb_eval_override": args.sb_eval,
        "device": args.device,
    }


def _suite_version(suite: str) -> int | str | None:
    if suite == "builtin":
        return SUITE_VERSION
    if reasoning_gym.parse_suite(suite) is not None:
        return f"reasoning-gym=={reasoning_gym.rg_version()}"
    return None


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


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _eval_addition(args: argparse.Namespace) -> int:
    from symbreak.eval.addition import evaluate_addition, format_addition

    # --out FILE, or a directory (default RUN_DIR/eval) to hold addition_<checkpoint>.json;
    # a bad --out fails here, before the scoring
    out_dir, out = args.run_dir / "eval", None
    if args.out is not None and Path(args.out).expanduser().is_dir():
        out_dir = Path(args.out).expanduser()
    elif args.out is not None:
        out = output_file(args.out, "addition.json", "--out")
    run = _load(args, args.run_dir)
    print(_describe(run), flush=True)
    result = evaluate_addition(run.model, run.cfg, args.problems, args.batch_size)
    print(format_addition(result))
    data = {
        "symbreak_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **_run_json(run),
        **result,
    }
    if out is None:
        out = out_dir / f"addition_{run.checkpoint.name}.json"
    report.write_json(out, data)
    print(f"\nwrote {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task == "addition":
        return _eval_addition(args)
    items = collect_items(args)
    _check_items(items, args.val)
    if args.out is not None:
        output_file(args.out, "eval.json", "--out")  # refused now, not after the scoring
    run = _load(args, args.run_dir)
    if items:  # --suite none --val alone works for any run
        _require_gpt2_vocabulary(run)
    print(_describe(run), flush=True)
    data: dict[str, Any] = {
        "symbreak_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **_run_json(run),
        "options": _options(args),
        "methods": report.METHODS,
        "validation": None,
    }
    if args.val:
        data["validation"] = _validation(run)
        print(_validation_line(data["validation"]), flush=True)
    if items:
        score, summary = _score(run, items, args.batch_size)
        print(report.timing_line(score))
        print()
        print(report.eval_table(summary))
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
    name = f"{run.checkpoint.name}.json"
    out = output_file(args.out or args.run_dir / "eval" / name, name, "--out")
    report.write_json(out, data)
    print(f"\nwrote {out}")
    return 0


def _unique_names(run_dirs: list[Path]) -> list[str]:
    names = [p.name for p in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{p.name}" for i, p in enumerate(run_dirs)]


def compare_outputs(
    out: Path | None, run_dirs: list[Path], plot: bool = True
) -> tuple[Path, Path | None]:
    """(JSON path, PNG path or None) for ``compare --out`` (see the module docstring)."""
    if out is None:
        names = [re.sub(r"[^\w.-]+", "_", p.resolve().name) for p in run_dirs]
        name = "compare-" + "-vs-".join(names)
        if len(name) > 100:
            name = f"compare-{names[0][:40]}-and-{len(names) - 1}-more"
        out = run_dirs[0].resolve().parent / name
    if out.suffix in (".json", ".png") and not out.is_dir():
        json_path = output_file(out.with_suffix(".json"), "compare.json", "--out")
        png = json_path.with_suffix(".png")
    else:
        directory = output_dir(out, "--out")
        json_path, png = directory / "compare.json", directory / "compare.png"
    if png.is_dir():
        raise SymbreakError(f"--out: the chart's path {png} is a directory; choose another --out")
    return json_path, png if plot else None


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.run_dirs) < 2:
        raise SymbreakError("compare needs at least two run directories")
    json_out, png = compare_outputs(args.out, args.run_dirs, plot=not args.no_plot)
    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:
        raise SymbreakError(
            f"compare draws its chart with matplotlib, which is not installed: pip install "
            f"{MATPLOTLIB_PIN} (or pass --no-plot)"
        )
    items = collect_items(args)
    if not items:
        raise SymbreakError("nothing to compare: --suite none without --puzzles FILE.jsonl")
    names = _unique_names(args.run_dirs)
    runs_json, results, summaries = [], [], []
    for name, run_dir in zip(names, args.run_dirs, strict=True):
        run = _load(args, run_dir)
        _require_gpt2_vocabulary(run)
        print(_describe(run), flush=True)
        entry = {"name": name, **_run_json(run), "validation": None}
        if args.val:
            entry["validation"] = _validation(run)
            print("  " + _validation_line(entry["validation"]), flush=True)
        score, summary = _score(run, items, args.batch_size)
        print("  " + report.timing_line(score), flush=True)
        entry["seconds"] = score.seconds
        runs_json.append(entry)
        results.append(score.results)
        summaries.append(summary)
        del run  # free the model before loading the next one
    diffs = [paired_differences(results[0], other) for other in results[1:]]
    print()
    print(report.compare_table(names, summaries, diffs))
    data = {
        "symbreak_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": _options(args),
        **report.compare_json(runs_json, summaries, diffs),
        "chart": None,
    }
    if png is not None:
        report.plot_compare(png, names, summaries)
        data["chart"] = str(png)
        print(f"\nwrote {png}")
    report.write_json(json_out, data)
    print(f"wrote {json_out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from symbreak.eval.sample import generate

    run = _load(args, args.run_dir)
    _require_gpt2_vocabulary(run)
    print(_describe(run), file=sys.stderr, flush=True)
    sample = generate(
        run.model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k or None,
        seed=args.seed,
        block_size=run.cfg.model.block_size,
        device=run.device,
        tokenizer=run.tokenizer,
    )
    print(args.prompt + sample.text)
    end = "end-of-text" if sample.stopped_at_eot else f"{len(sample.new_ids)} new tokens"
    print(f"[{end}; seed {args.seed}]", file=sys.stderr)
    return 0
