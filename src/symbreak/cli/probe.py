"""``symbreak probe permutation|position``: positional-symmetry probes.

Thin: options in, :func:`symbreak.analysis.probes.probe_permutation` /
:func:`symbreak.analysis.probes.probe_position` do the work, a table out and JSON (and PNGs)
written atomically. Errors are :class:`~symbreak.errors.SymbreakError` lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak.analysis.options import TEXT_SOURCES
from symbreak.cli.argtypes import float_range, int_range, seed
from symbreak.errors import SymbreakError
from symbreak.jsonio import write_json_atomic
from symbreak.outputs import output_file, stamp
from symbreak.plotting import require_matplotlib


def _int_list(text: str) -> list[int]:
    parts = text.split(",")
    if any(not v.strip() for v in parts):
        raise argparse.ArgumentTypeError(f"'{text}' has an empty item; write e.g. 4,8,16")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of whole numbers"
        ) from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must list positive whole numbers")
    return values


_positive = int_range(1)


def _common(p: argparse.ArgumentParser, runs: str) -> None:
    p.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help=runs)
    p.add_argument(
        "--init",
        nargs="+",
        metavar="KEY=VALUE",
        default=None,
        help="probe a freshly initialised model of this config instead (overrides as for "
        "`symbreak train`; seed train.seed)",
    )
    p.add_argument("--checkpoint", default="latest", metavar="latest|best|STEP")
    p.add_argument(
        "--text",
        choices=TEXT_SOURCES,
        default="val",
        help="held-out text: the validation split of the config's data.source (default) or "
        "uniformly random token ids",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of permutations, shuffles, text")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write JSON here")


def register(subparsers: Any) -> None:
    """Add ``probe`` (with ``permutation`` and ``position``) to an ``add_subparsers()``."""
    probe = subparsers.add_parser(
        "probe",
        help="positional-symmetry probes: permutation invariance, position probes",
        description="Probes of the positional symmetry of a trained run or a fresh model.",
    )
    targets = probe.add_subparsers(dest="probe", required=True, metavar="PROBE")

    p = targets.add_parser(
        "permutation",
        help="shuffle tokens 1..n-1 and measure the change of the output at position n",
        description="Shuffle tokens 1..n-1 of held-out sequences (several n, several "
        "permutations each) and report the largest change of the logits at position n relative "
        "to their size, in float64 by default. Exactly invariant (< 1e-10): NoPE with the "
        "bidirectional mask at any depth, NoPE causal with one layer. --grid prints the whole "
        "table for fresh models (every encoding x mask x 1-2 layers).",
    )
    _common(p, "a run directory (or use --init)")
    p.add_argument(
        "--lengths",
        type=_int_list,
        default=None,
        metavar="N,N,...",
        help="sequence lengths n (default: 4, 8, 16, ... and model.block_size)",
    )
    p.add_argument(
        "--sequences",
        type=_positive,
        default=16,
        metavar="S",
        help="held-out sequences per length (default 16)",
    )
    p.add_argument(
        "--permutations",
        type=_positive,
        default=4,
        metavar="P",
        help="random non-identity shuffles per length (default 4)",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument(
        "--tolerance",
        type=float_range(0.0),
        default=1e-10,
        help="relative change below which the output counts as invariant",
    )
    p.add_argument(
        "--grid",
        action="store_true",
        help="fresh models of every pos_encoding x mask x n_layer 1,2, other keys "
        "from --init (or the defaults)",
    )
    p.set_defaults(func=run_permutation)

    p = targets.add_parser(
        "position",
        help="linear probes of position and vertical-slice similarity, per layer",
        description="Per layer (embedding output through the last block), ridge probes from "
        "the hidden state at position k to k (R^2 and accuracy, fit on held-out text and scored "
        "on other text) and the position x position cosine similarity with its adjacency "
        "score, each with a random-init and a shuffled-label control. Several runs are "
        "overlaid. Writes JSON and two PNGs (R^2 by layer; similarity heatmaps).",
    )
    _common(p, "run directories (or use --init); several are overlaid")
    p.add_argument(
        "--length",
        type=_positive,
        default=None,
        metavar="T",
        help="positions per sequence (default: model.block_size)",
    )
    p.add_argument("--fit-sequences", type=_positive, default=64, metavar="S")
    p.add_argument("--score-sequences", type=_positive, default=32, metavar="S")
    p.add_argument(
        "--alpha",
        type=float_range(0.0, low_open=True),
        default=1e-3,
        help="ridge strength relative to the number of rows (default 1e-3)",
    )
    p.add_argument(
        "--near",
        type=_positive,
        default=2,
        help="adjacency: pairs with 1 <= |i-j| <= near count as near (default 2)",
    )
    p.add_argument("--no-plot", action="store_true", help="JSON and table only")
    p.set_defaults(func=run_position)


def _write_json(path: Path, data: dict) -> None:

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data, indent=2)
    print(f"wrote {path}")


def run_permutation(args: argparse.Namespace) -> int:
    from symbreak.analysis.probes import (
        permutation_json,
        permutation_lines,
        permutation_summary,
        probe_permutation,
    )

    out = None
    if args.out is not None:  # refused now, not after the probing
        out = output_file(args.out, "probe_permutation.json", "--out", kind="probe permutation")
    probes = probe_permutation(
        args.run_dirs,
        init=args.init,
        grid=args.grid,
        checkpoint=args.checkpoint,
        text=args.text,
        seed=args.seed,
        lengths=args.lengths,
        sequences=args.sequences,
        permutations=args.permutations,
        dtype=args.dtype,
        tolerance=args.tolerance,
    )
    if not args.grid:
        for probe in probes:
            print("\n".join(permutation_lines(probe, args.text)))
    print("\n".join(permutation_summary(probes)))
    if out is not None:
        _write_json(out, stamp(permutation_json(probes, args.text, args.seed), "probe permutation"))
    return 0


def run_position(args: argparse.Namespace) -> int:
    from symbreak.analysis.position import format_table, plot_probes
    from symbreak.analysis.probes import position_json, probe_position

    if not args.no_plot:
        require_matplotlib("probe position draws its figures", "pass --no-plot")
    if args.out is not None:
        out = output_file(args.out, "probe_position.json", "--out", kind="probe position")
    elif args.run_dirs:  # beside the (first) run, like analyze and eval
        out = Path(args.run_dirs[0]) / "probes" / f"position-{args.checkpoint}.json"
    else:
        raise SymbreakError("probe position --init writes no run: give --out FILE.json")
    probes = probe_position(
        args.run_dirs,
        init=args.init,
        checkpoint=args.checkpoint,
        text=args.text,
        seed=args.seed,
        length=args.length,
        fit_sequences=args.fit_sequences,
        score_sequences=args.score_sequences,
        alpha=args.alpha,
        near=args.near,
    )
    print(format_table([p for _, p in probes]))
    _write_json(out, stamp(position_json(probes, args.text, args.seed), "probe position"))
    if not args.no_plot:
        r2_png, sim_png = out.with_suffix(".r2.png"), out.with_suffix(".similarity.png")
        plot_probes([p for _, p in probes], str(r2_png), str(sim_png))
        print(f"wrote {r2_png}\nwrote {sim_png}")
    return 0
