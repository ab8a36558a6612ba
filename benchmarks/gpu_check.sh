#!/usr/bin/env bash
# GPU check of the ZO engine (issue 9), for one H100/H200, offline, under 8 minutes:
#   1. the GPU tests (-m gpu, plus the Triton kernel = torch implementation and fused-path tests);
#   2. `llm-hybrid bench` at the OPT-1.3B shape (bf16, batch 16 x 256): fo-peft, hybrid forward and central,
#      zo-full and the MeZO-style loop, as ratios in one run;
#   3. the same at the LLaMA-7B shape (bf16, batch 16 x 64): hybrid-forward, zo-full, the MeZO-style loop, fo-peft;
#   4. a one-GPU FSDP2 smoke run (world size 1) of the tiny model: sharded-base run == plain run (gpu_fsdp_smoke.txt).
# Models are built from configs with random weights (no download). Writes benchmarks/results/gpu_*.json (device
# named inside) and gpu_tests.txt. Runs from the source tree (PYTHONPATH), so nothing is installed or fetched:
# it needs torch (CUDA), transformers, peft, and optionally triton (the kernels; without it the torch path runs).
# Usage: bash benchmarks/gpu_check.sh [output folder]      (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
status=0

"$PY" - "$OUT" <<'PYEOF' || status=1
import importlib.util, json, sys, torch
from hybridtheory.io import atomic_write_text
mods = {m: (__import__(m).__version__ if importlib.util.find_spec(m) else None)
        for m in ("torch", "transformers", "peft", "triton", "accelerate")}
info = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda, "versions": mods}
print(json.dumps(info))
if not torch.cuda.is_available():
    sys.exit("no CUDA device")
atomic_write_text(f"{sys.argv[1]}/gpu_env.json", json.dumps(info, indent=1) + "\n")
PYEOF
[ $status -eq 0 ] || { echo "gpu_check: no usable CUDA torch; stopping" >&2; exit 1; }

# 1. tests (about 1 minute)
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_counter.py tests/test_fused.py tests/test_base_policy.py \
    -k "gpu or cuda or kernel or axpy" 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt" || status=1

# 2. OPT-1.3B shape (about 2-3 minutes)
timeout 300 "$PY" -m llm_experiments bench --device cuda --shape opt-1.3b --dtype bfloat16 --batch-size 16 \
    --seq-len 256 --steps 5 --warmup 2 --no-drift \
    --cases fo-peft,hybrid-forward,hybrid-central,zo-full,mezo-loop,hybrid-forward-stochastic \
    --out "$OUT/gpu_bench_opt-1.3b_bfloat16.json" || status=1

# 3. LLaMA-7B shape (about 2-3 minutes; fits 80 GB cards with the fp32 master; the compensated and stochastic
#    base policies are what fits 40-48 GB cards: their peak memory is the number to read)
timeout 280 "$PY" -m llm_experiments bench --device cuda --shape llama-7b --dtype bfloat16 --batch-size 16 \
    --seq-len 64 --steps 3 --warmup 1 --no-drift \
    --cases fo-peft,hybrid-forward,zo-full,mezo-loop,hybrid-forward-compensated,hybrid-forward-stochastic \
    --out "$OUT/gpu_bench_llama-7b_bfloat16.json" || status=1

# 4. one-GPU FSDP2 smoke run (world size 1, issue 10): the sharded-base path on CUDA/nccl equals the plain run
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_llm_distributed.py 2>&1 | tail -5 \
    | tee "$OUT/gpu_fsdp_smoke.txt" || status=1

echo "gpu_check: done (status $status); results in $OUT"
exit $status
