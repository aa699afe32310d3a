"""``symbreak report RUN...``: tables, paired tests and curves over runs;
:func:`symbreak.experiments.build_report` (and :func:`~symbreak.experiments.build_addition_report`
for ``--task addition``) do the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak.cli.argtypes import float_range
from symbreak.errors import ExperimentError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables, paired tests and curves over a sweep or runs",
        description="Group runs by their config minus the seed and report, per group, final "
        "and best validation loss (mean, std, Student-t 95%% CI over seeds), and differences "
        "to a baseline variant paired by seed (paired t-test; Welch's as the unpaired "
        "alternative). Writes report.md, report.json and PNG curves (default: "
        "SWEEP_DIR/report/, or ./report/ for loose runs).",
    )
    p.add_argument("runs", nargs="*", type=Path, metavar="SWEEP_DIR|RUN_DIR")
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="REPORT_JSON",
        help="recompute a loss report's cells and differences (with the correction for "
        "multiple comparisons) from the per-run figures in its report.json, without the run "
        "directories; keeps its difference curves and figures and rewrites report.md and "
        "report.json (in --out, default the JSON's directory)",
    )
    p.add_argument(
        "--baseline",
        metavar="VARIANT",
        default=None,
        help="the variant the others are compared with (default: the one without biases)",
    )
    p.add_argument(
        "--metric",
        choices=("val_loss", "best_val_loss"),
        default=None,
        help="the figure the differences and significance are about (default: val_loss, the "
        "final fixed-set validation loss; with --from-json, the stored report's)",
    )
    p.add_argument(
        "--eval",
        action="store_true",
        help="add the puzzle suite (macro accuracy, answer cross-entropy), running "
        "`symbreak eval` on runs not yet evaluated at their latest checkpoint",
    )
    p.add_argument(
        "--task",
        choices=("loss", "addition", "cot-arithmetic"),
        default="loss",
        help="loss (default): validation loss as above; addition: held-out exact match, steps "
        "to --threshold and positional probes of data.source=addition runs (written to "
        "SWEEP_DIR/report-addition/ by default); cot-arithmetic: validation loss plus "
        "chain-of-thought exact match (overall and per type) and chain log-probability of "
        "fine-tuned runs, evaluating those not yet evaluated, paired by seed",
    )
    p.add_argument(
        "--threshold",
        type=float_range(0.0, 1.0),
        default=0.9,
        help="--task addition: the exact match whose first step is reported (default 0.9)",
    )
    p.add_argument(
        "--no-probes",
        action="store_true",
        help="--task addition: skip the permutation and position probes",
    )
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output directory")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_json is not None:
        from symbreak.experiments.report import rebuild_report

        if args.runs or args.eval or args.task != "loss":
            raise ExperimentError(
                "--from-json takes no SWEEP_DIR|RUN_DIR, --eval or --task addition: it "
                "recomputes a loss report from its report.json alone"
            )
        return rebuild_report(args.from_json, args.out, args.baseline, args.metric)
    if not args.runs:
        raise ExperimentError(
            "give a sweep directory or run directories to report (or --from-json REPORT_JSON)"
        )
    if args.task == "addition":
        from symbreak.experiments.addition_report import build_addition_report

        if args.eval or args.baseline or args.metric is not None:
            raise ExperimentError(
                "--task addition takes none of --eval, --baseline, --metric (it reports exact "
                "match, steps to --threshold and the probes)"
            )
        return build_addition_report(
            args.runs,
            out=args.out,
            threshold=args.threshold,
            probes=not args.no_probes,
            plot_figures=not args.no_plot,
        )
    from symbreak.experiments.report import build_report

    return build_report(
        args.runs,
        baseline=args.baseline,
        metric=args.metric or "val_loss",
        with_eval=args.eval,
        out=args.out,
        plot_figures=not args.no_plot,
        task=args.task,
    )
