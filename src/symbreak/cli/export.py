"""``symbreak export RUN_DIR --format hf --out DIR``: a run as a Hugging Face model directory;
:func:`symbreak.integrations.export.export_hf` does the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symbreak.integrations.export import EXPORT_SB_EVAL


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a run as a Hugging Face model directory",
        description="Export a run's checkpoint as a Hugging Face directory (config.json, "
        "model.safetensors, GPT-2 tokenizer). The mean symmetry-breaking biases are folded "
        "into c_attn.bias. GELU runs become a standard GPT2LMHeadModel; PReLU runs ship their "
        "modeling file (load with trust_remote_code=True).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory")
    p.add_argument("--format", choices=("hf",), default="hf", help="output format (hf)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="new output directory")
    p.add_argument(
        "--checkpoint",
        default="latest",
        help="latest (default), best, or a step number",
    )
    p.add_argument(
        "--sb-eval",
        choices=EXPORT_SB_EVAL,
        default=None,
        help="fold the mean biases (mean) or drop them (zero); default: the run's sb.eval",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from symbreak.integrations.export import export_hf

    res = export_hf(args.run_dir, args.out, checkpoint=args.checkpoint, sb_eval=args.sb_eval)
    print(
        f"exported {args.run_dir} step {res.step} to {res.out}: {res.architecture}, "
        f"biases folded: {', '.join(res.folded) or 'none'}, vocabulary {res.vocab_size}"
    )
    return 0
