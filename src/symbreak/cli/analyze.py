"""``symbreak analyze RUN_DIR``: which token classes each head amplifies or suppresses with
<bQ>; :func:`symbreak.analysis.alignment.analyze_run` does the work.

Cheap checks (options, matplotlib, the --text file) run before any model is loaded, so mistakes
fail in a second. Default output: ``RUN_DIR/analysis/<checkpoint>/`` (e.g.
``analysis/step_00001000/``) with analysis.json, the PNG figures and report.html.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from symbreak.analysis.options import DEFAULT_TOKENS, DEFAULT_TOP, Options
from symbreak.cli.argtypes import float_range, seed


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``analyze`` to an ``add_subparsers()`` object."""
    d = Options()
    p = subparsers.add_parser(
        "analyze",
        help="which token classes each head amplifies/suppresses with <bQ>, with null baselines",
        description="Per layer and head, the logit bonus <bQ>.k/sqrt(d) that the mean query "
        "bias gives every key: at vocabulary level (layer-0 keys of each token id alone) and in "
        "context (keys captured inside attention on held-out text, every layer). Token-class "
        "enrichment at the top-K/bottom-K with permutation p-values and BH q-values, "
        "selectivity against random directions of the same norm, and optionally a symmetric "
        "baseline run. Writes analysis.json, PNG figures and a self-contained report.html.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="latest|best|STEP",
        help="which checkpoint: latest (default), best (lowest recorded val_loss) or a step",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="SYM_RUN_DIR",
        help="a symmetric run (no bQ) of the same shape, analysed the same way with the "
        "vector bQ would have had (sb.q_mean in every dimension); its latest checkpoint",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", type=Path, metavar="FILE", help="analyse this UTF-8 text file")
    src.add_argument(
        "--tokens",
        type=_positive,
        default=DEFAULT_TOKENS,
        metavar="N",
        help=f"tokens of the run's validation split to analyse (default {DEFAULT_TOKENS:,})",
    )
    p.add_argument(
        "--top",
        type=_positive,
        default=d.top,
        metavar="K",
        help=f"token ids in each end, amplified and suppressed (default {DEFAULT_TOP}, or a "
        "fifth of the population when it has fewer than 250 ids, e.g. 17 for 85 characters; "
        "an explicit K that does not fit twice is an error)",
    )
    p.add_argument(
        "--permutations",
        type=_positive,
        default=d.permutations,
        metavar="N",
        help=f"seeded permutations per scope for the p-values (default {d.permutations}; "
        "the smallest p is 1/(N+1))",
    )
    p.add_argument(
        "--null-directions",
        type=_positive,
        default=d.null_directions,
        metavar="R",
        help=f"random directions of the norm of <bQ> per head (default {d.null_directions})",
    )
    p.add_argument(
        "--min-count",
        type=_positive,
        default=d.min_count,
        metavar="N",
        help=f"context: analyse token ids seen at least N times (default {d.min_count})",
    )
    p.add_argument(
        "--vocab-positions",
        choices=("none", "mean"),
        default=d.vocab_positions,
        help="vocabulary level: leave positions out (default) or add the mean position "
        "embedding to each token embedding",
    )
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default=d.dtype,
        help="in-context forward: fp32 (default, exact) or bf16 autocast (about half the CPU "
        "time on CPUs with native bf16; the keys are then those bf16 attention used)",
    )
    p.add_argument(
        "--alpha",
        type=float_range(0.0, 1.0, low_open=True, high_open=True),
        default=d.alpha,
        help="q-value threshold (0.05)",
    )
    p.add_argument("--seed", type=seed, default=d.seed, help="seed of permutations and nulls")
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA if available), cpu, cuda, cuda:N"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default RUN_DIR/analysis/<checkpoint>/)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.analysis.alignment import analyze_run, check_same_shape, populations, top_used
    from symbreak.analysis.figures import require_matplotlib
    from symbreak.analysis.output import summary_lines, write_outputs
    from symbreak.analysis.text import file_tokens, read_text, validation_tokens
    from symbreak.outputs import output_dir
    from symbreak.runs import load_run

    opts = Options(
        top=args.top,
        permutations=args.permutations,
        null_directions=args.null_directions,
        min_count=args.min_count,
        seed=args.seed,
        vocab_positions=args.vocab_positions,
        alpha=args.alpha,
        dtype=args.dtype,
    )
    opts.check()
    require_matplotlib()
    text = read_text(args.text) if args.text is not None else None
    if args.out is not None:  # a file in the way fails now, not after the analysis
        output_dir(args.out, "--out")
    t0 = time.perf_counter()
    run = load_run(args.run_dir, args.checkpoint, device=args.device)
    out = args.out if args.out is not None else run.run_dir / "analysis" / run.checkpoint.name
    baseline = load_run(args.baseline, "latest", device=args.device) if args.baseline else None
    if baseline is not None:
        check_same_shape(run, baseline)
    tokenizer = run.tokenizer
    if text is None:
        tokens = validation_tokens(run.cfg, args.tokens)
        source = f"the validation split of {run.cfg.data.source}"
    else:
        tokens = file_tokens(args.text, tokenizer=tokenizer, text=text)
        source = str(args.text)
    # bad --top etc.: fail before work
    n_vocab, ctx_pop = populations(tokens, run.cfg.model.vocab_size, opts, tokenizer)
    tops = top_used(n_vocab, int(ctx_pop.numel()), opts)
    print(
        f"analyzing {run.run_dir} {run.checkpoint.name} on {tokens.numel():,} tokens "
        f"({tokenizer.name} tokenizer, {opts.permutations} permutations, "
        f"{opts.null_directions} random directions)",
        file=sys.stderr,
        flush=True,
    )
    for scope, used in tops.items():
        if used["rule"] != "default" and opts.top is None:
            print(f"  {scope}: --top {used['k']}, {used['rule']}", file=sys.stderr, flush=True)

    def progress(message: str) -> None:
        print(f"  [{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    result = analyze_run(run, tokens, opts, source, baseline, progress)
    paths = write_outputs(result, out)
    print("\n".join(summary_lines(result)))
    print(f"wrote {', '.join(p.name for p in paths)} to {out} ({time.perf_counter() - t0:.1f} s)")
    return 0
