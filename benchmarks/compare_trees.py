"""Two source trees against each other on this machine, interleaved in one run: ``symbreak
bench train --json`` (fp32 cases) and ``symbreak --help`` start-up.

    .venv/bin/python benchmarks/compare_trees.py BEFORE_SRC AFTER_SRC [REPEATS]

BEFORE_SRC/AFTER_SRC are the ``src`` directories of two checkouts (e.g. a ``git worktree`` of an
earlier commit); each runs with ``PYTHONPATH`` set to it. The order of the two alternates every
repeat, so a neighbour's load hits both alike. Prints JSON: per case the median tokens/s of each
tree and their ratio, and the median ``--help`` time.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from speed_targets import CHAR  # the CPU study's configuration, as the speed targets use it

TREES = {"before": sys.argv[1], "after": sys.argv[2]}
PY = sys.executable
CASES = {
    "paper_code": ["--dtype", "fp32"],
    "char_fp32": ["--dtype", "fp32", *CHAR],
    "small_fp32": ["--dtype", "fp32", "model.preset=small"],
}
out = {"cases": {}, "help_s": {}}
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 2
for case, args in CASES.items():
    res = {t: [] for t in TREES}
    for r in range(repeats):
        for tree in TREES if r % 2 == 0 else list(TREES)[::-1]:
            env = {**os.environ, "PYTHONPATH": TREES[tree]}
            p = subprocess.run(
                [PY, "-m", "symbreak", "bench", "train", "--json", "--steps", "10", *args],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            d = json.loads(p.stdout)
            res[tree].append({k: d.get(k) for k in ("tok_per_s", "mfu", "x_paper_code", "step_ms")})
            print(case, tree, r, res[tree][-1], flush=True)
    out["cases"][case] = {
        t: {"tok_per_s_median": statistics.median(x["tok_per_s"] for x in v), "runs": v}
        for t, v in res.items()
    }
    b, a = (out["cases"][case][t]["tok_per_s_median"] for t in ("before", "after"))
    out["cases"][case]["after_over_before"] = a / b
for tree in TREES:
    env = {**os.environ, "PYTHONPATH": TREES[tree]}
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([PY, "-m", "symbreak", "--help"], env=env, capture_output=True, check=True)
        ts.append(time.perf_counter() - t0)
    out["help_s"][tree] = statistics.median(ts)
print(json.dumps(out, indent=1))
