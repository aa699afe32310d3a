"""``symbreak probe permutation|position``: ``register(subparsers)`` adds them.

Thin: options in, :mod:`symbreak.analysis.permutation` / :mod:`symbreak.analysis.position` do
the work, a table out and JSON (and PNGs) written atomically. Errors are
:class:`~symbreak.errors.SymbreakError` lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from symbreak.errors import SymbreakError

MATPLOTLIB_PIN = "matplotlib==3.11.2"
GRID_ENCODINGS = ("none", "learned", "sinusoidal", "rope", "alibi")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of whole numbers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must list positive whole numbers")
    return values


def _positive(text: str) -> int:
    (value,) = _int_list(text)
    return value


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
        choices=("val", "random"),
        default="val",
        help="held-out text: the validation split of the config's data.source (default) or "
        "uniformly random token ids",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of permutations, shuffles, text")
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
        type=float,
        default=1e-10,
        help="relative change below which the output counts as invariant",
    )
    p.add_argument(
        "--grid",
        action="store_true",
        help="fresh models of every pos_encoding x mask x n_layer 1,2, other keys "
        "from --init (or the defaults)",
    )
    p.set_defaults(func=cmd_permutation)

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
        type=float,
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
    p.set_defaults(func=cmd_position)


# --------------------------------------------------------------------------------------------


def _sources(args: argparse.Namespace) -> list:
    from symbreak.analysis.sources import init_model, load_source

    if args.init is not None and args.run_dirs:
        raise SymbreakError("pass RUN_DIRs or --init KEY=VALUE ..., not both")
    if args.init is not None:
        return [init_model(args.init)]
    if not args.run_dirs:
        raise SymbreakError("pass a RUN_DIR or --init KEY=VALUE ...")
    return [load_source(d, None, args.checkpoint) for d in args.run_dirs]


def _write_json(path: Path, data: dict) -> None:
    from symbreak.atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


def cmd_permutation(args: argparse.Namespace) -> int:
    import torch

    from symbreak.analysis.permutation import permutation_test
    from symbreak.analysis.sources import held_out_tokens, init_model

    if args.grid:
        if args.run_dirs:
            raise SymbreakError("--grid builds fresh models: use it with --init, not a RUN_DIR")
        base = list(args.init or [])
        sources = [
            init_model(
                [*base, f"model.pos_encoding={pe}", f"model.mask={mask}", f"model.n_layer={layers}"]
            )
            for pe in GRID_ENCODINGS
            for mask in ("bidirectional", "causal")
            for layers in (1, 2)
        ]
    else:
        sources = _sources(args)
        if len(sources) > 1:
            raise SymbreakError("probe permutation takes one RUN_DIR")
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    rows, out = [], []
    for src in sources:
        T = src.cfg.model.block_size
        lengths = args.lengths or sorted({2**k for k in range(2, T.bit_length())} | {T})
        if max(lengths) > T:
            raise SymbreakError(
                f"--lengths asks for n={max(lengths)} but {src.label} has sequences of at most "
                f"model.block_size={T} tokens"
            )
        if min(lengths) < 3:
            raise SymbreakError("--lengths: n must be at least 3 (two tokens to shuffle)")
        tokens = held_out_tokens(src.cfg, args.sequences, max(lengths), args.text, args.seed)
        res = permutation_test(
            src.model, tokens, lengths, args.permutations, args.seed, dtype, args.tolerance
        )
        m = src.cfg.model
        rows.append((m.pos_encoding, m.mask, m.n_layer, m.residual, res))
        out.append(
            {
                "label": src.label,
                "pos_encoding": m.pos_encoding,
                "mask": m.mask,
                "n_layer": m.n_layer,
                "residual": m.residual,
                **res.to_json(),
                "model": src.cfg.to_dict()["model"],
            }
        )
        if not args.grid:
            print(
                f"{src.label}: pos_encoding={m.pos_encoding} mask={m.mask} "
                f"n_layer={m.n_layer} residual={m.residual}, {args.text} text, {res.dtype}"
            )
            print(f"{'n':>5} {'max rel change':>15} {'mean':>11}")
            for r in res.lengths:
                print(f"{r.n:>5} {r.max_rel_change:>15.3e} {r.mean_rel_change:>11.3e}")
    print(f"{'pos_encoding':<12} {'mask':<14} {'layers':>6} {'max rel change':>15}  verdict")
    for pe, mask, layers, _, res in rows:
        verdict = "invariant" if res.invariant else "not invariant"
        print(f"{pe:<12} {mask:<14} {layers:>6} {res.max_rel_change:>15.3e}  {verdict}")
    if args.out:
        _write_json(
            args.out, {"probe": "permutation", "text": args.text, "seed": args.seed, "results": out}
        )
    return 0


def cmd_position(args: argparse.Namespace) -> int:
    from symbreak.analysis.position import format_table, plot_probes, probe_positions
    from symbreak.analysis.sources import held_out_tokens, random_init_control

    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:
        raise SymbreakError(
            f"probe position draws its figures with matplotlib, which is not installed: pip "
            f"install {MATPLOTLIB_PIN} (or pass --no-plot)"
        )
    sources = _sources(args)
    probes = []
    for src in sources:
        block_size = src.cfg.model.block_size
        T = args.length or block_size
        if block_size < T:
            raise SymbreakError(
                f"--length {T} is longer than {src.label}'s model.block_size="
                f"{src.cfg.model.block_size}"
            )
        if T < 4:
            raise SymbreakError("--length must be at least 4 (near and distant pairs)")
        n = args.fit_sequences + args.score_sequences
        tokens = held_out_tokens(src.cfg, n, T, args.text, args.seed)
        probes.append(
            probe_positions(
                src.label,
                src.model,
                random_init_control(src.cfg),
                tokens[: args.fit_sequences],
                tokens[args.fit_sequences :],
                args.alpha,
                args.near,
                args.seed,
            )
        )
    print(format_table(probes))
    out = args.out or Path("probe_position.json")
    _write_json(
        out,
        {
            "probe": "position",
            "text": args.text,
            "seed": args.seed,
            "runs": [
                {**p.to_json(), "model": src.cfg.to_dict()["model"]}
                for p, src in zip(probes, sources, strict=True)
            ],
        },
    )
    if not args.no_plot:
        r2_png, sim_png = out.with_suffix(".r2.png"), out.with_suffix(".similarity.png")
        plot_probes(probes, str(r2_png), str(sim_png))
        print(f"wrote {r2_png}\nwrote {sim_png}")
    return 0
