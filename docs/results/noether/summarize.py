"""charges.json: the committed summary of the Noether study's noether.csv files.

    python docs/results/noether/summarize.py runs/cpu-noether

For each run of the sweep and each sector (qk, vo): the median over (layer, head) of the
relative charge |L|_F / (|W|_F |P|_F) at a few steps, and its maximum over every layer, head
and logged step. The per-step CSVs themselves (3,200 rows per run) stay with the runs.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

STEPS = (10, 100, 500, 1000)


def summarize(run_dir: Path) -> dict:
    rows = list(csv.DictReader((run_dir / "noether.csv").open(encoding="utf-8")))
    optimizer, variant, _ = run_dir.name.split("-")
    out: dict = {"run": run_dir.name, "optimizer": optimizer, "variant": variant, "sectors": {}}
    for sector in ("qk", "vo"):
        rel = [(int(r["step"]), float(r["relative"])) for r in rows if r["sector"] == sector]
        out["sectors"][sector] = {
            "median_at_step": {
                str(s): statistics.median(v for step, v in rel if step == s) for s in STEPS
            },
            "max": max(v for _, v in rel),
        }
    return out


def main() -> None:
    sweep = Path(sys.argv[1])
    runs = [summarize(d) for d in sorted(sweep.iterdir()) if (d / "noether.csv").is_file()]
    here = Path(__file__).resolve().parent
    (here / "charges.json").write_text(json.dumps({"steps": STEPS, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
