"""Time `symbreak export --format hf` on a random 124m-preset run and check the export.

    .venv/bin/python benchmarks/export_hf.py gelu|prelu

Builds a run directory with one checkpoint (bQ + bV, batch mode) in a temporary directory,
exports it, loads it with transformers and prints the time, the size on disk and the largest
logit difference to symbreak's eval-mode logits on 128 random tokens.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp())

import torch
from transformers import AutoModelForCausalLM

from symbreak.config import Config
from symbreak.integrations.export import export_hf
from symbreak.model import GPT
from symbreak.train.checkpoint import save_checkpoint


def main(activation: str) -> None:
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    cfg = Config.from_dict(
        {
            "model": {"preset": "124m", "activation": activation},
            "sb": {"q": True, "v": True},
            "train": {"out_dir": str(tmp), "name": "r"},
        }
    )
    (tmp / "r").mkdir()
    (tmp / "r" / "config.toml").write_text(cfg.to_toml())
    gpt = GPT(cfg.model, cfg.sb)
    save_checkpoint(tmp / "r", 1, gpt, None, {"config": cfg.to_dict()})
    t = time.perf_counter()
    export_hf(tmp / "r", tmp / "hf")
    seconds = time.perf_counter() - t
    hf = AutoModelForCausalLM.from_pretrained(str(tmp / "hf"), trust_remote_code=True).eval()
    idx = torch.randint(0, 50257, (1, 128))
    with torch.no_grad():
        diff = (hf(idx).logits - gpt.eval()(idx)[0][..., :50257]).abs().max().item()
    size = sum(f.stat().st_size for f in (tmp / "hf").iterdir()) / 1e6
    print(f"{activation}: export {seconds:.1f} s, {size:.0f} MB, max |logit diff| {diff:.1e}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gelu")
