#!/usr/bin/env bash
# Issue 12's device run, in one call of at most 8 minutes: the `run` tool with carry [".whl"] (filled once by
# benchmarks/gpu/carry_wheels.sh) and command "bash benchmarks/gpu/device_check.sh". Every table goes to $OUT
# (at most 8 files come back): summary.txt (each step, its exit code and time), env.txt, tests.txt,
# sampler.txt, bandwidth.txt, serving.txt (8B twin build and hearth's levels), hf_generate.txt.
#
# Steps, each under a timeout within the budget left (BUDGET_S, default 460 s), most wanted first:
#   1. install the carried wheels into /tmp/site (the device README's recipe)
#   2. a random-weight twin of the default model (SmolLM2-135M's shape, tokenizer from .whl/default-model) where
#      the tests look for the default model: the tests need its shape and tokenizer, not its weights
#   3. tests on CUDA: kernels/triton's parity tests compiled, the `gpu`-marked tests, batch invariance
#   4. bench_sampler.py --device cuda at batch 1/32/256 x vocab 32k/128k (Triton, then the torch path)
#   5. copy bandwidth and the 8B twin's weight-read floor
#   6. the Llama-3.1-8B shape twin, built on the GPU; bench_serving.py on it at 1/8/32/128 clients, EOS ignored
#   7. transformers' generate on the same twin (static cache, compiled) at batch 1/32/8/128
# DEVICE_CHECK_DRY=1 runs the plumbing on the CPU with a 2-layer twin and tiny loads (no wheels, no tests).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hearth-device-out}
mkdir -p "$OUT"
START=$(date +%s)
BUDGET_S=${BUDGET_S:-460}
DRY=${DEVICE_CHECK_DRY:-0}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HEARTH_CACHE=${HEARTH_CACHE_DEVICE:-/tmp/hearth-cache}
TWIN=/tmp/hearth-twin-8b

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step FILE SECONDS CMD...: CMD's output appended to $OUT/FILE, under min(SECONDS, time left).
step() {
  local file=$1 secs=$2 t0 rc
  shift 2
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt 15 ]; then
    echo "SKIPPED (${remaining} s left): $*" | tee -a "$OUT/summary.txt"
    return 0
  fi
  [ "$secs" -gt "$remaining" ] && secs=$remaining
  echo "== $* (up to ${secs} s) -> $file" | tee -a "$OUT/summary.txt" "$OUT/$file"
  t0=$(date +%s)
  timeout -k 10 "$secs" "$@" >>"$OUT/$file" 2>&1
  rc=$?
  echo "   exit $rc after $(($(date +%s) - t0)) s$([ $rc -eq 124 ] && echo ' (timed out)')" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$file"
  return 0
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, 'triton', triton.__version__, 'gpu', torch.cuda.is_available())" 2>&1
  git log -1 --oneline 2>/dev/null
} >"$OUT/env.txt"
cat "$OUT/env.txt"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; LEVELS=(1 2); HF_BATCHES=(2); LAYERS=(--layers 2); TOKENS=8; KV_GIB=0.25
  TWIN_CONFIG=${HEARTH_CACHE}/models/SmolLM2-135M-Instruct
  [ -d "$TWIN_CONFIG" ] || TWIN_CONFIG=$HOME/.cache/hearth/models/SmolLM2-135M-Instruct
  TOKENIZER=$TWIN_CONFIG
else
  DEVICE=cuda; LEVELS=(1 8 32 128); HF_BATCHES=(1 32 8 128); LAYERS=(); TOKENS=64; KV_GIB=16
  TWIN_CONFIG=benchmarks/configs/llama-3.1-8b.json
  TOKENIZER=.whl/default-model
  # 1. carried wheels
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$OUT/summary.txt" 2>&1 || { echo "wheel install failed" | tee -a "$OUT/summary.txt"; exit 1; }
  export PYTHONPATH="$PWD:/tmp/site"
  # 2. the default model's shape, random weights, where models.yaml's default entry points
  step tests.txt 60 "$PY" benchmarks/shape_twin.py --config .whl/default-model --tokenizer-from .whl/default-model \
    --out "$HEARTH_CACHE/models/SmolLM2-135M-Instruct" --device cuda
  # 3. tests on CUDA
  step tests.txt 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/kernels/triton \
    tests/engine/model/models/test_batch_invariance.py
  step tests.txt 60 "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests/kernels tests/engine
  # 4. sampler
  step sampler.txt 60 "$PY" benchmarks/bench_sampler.py --device cuda --batches 1 32 256 --vocabs 32000 128256
  step sampler.txt 40 "$PY" benchmarks/bench_sampler.py --device cuda --backend torch --batches 1 32 256 \
    --vocabs 32000 128256 --iters 10
  # 5. bandwidth and the floor for Llama-3.1-8B's 8,030,261,248 bf16 weights
  step bandwidth.txt 30 "$PY" benchmarks/gpu/copy_bandwidth.py --weights 16060522496
fi

# 6. the 8B twin and hearth on it
step serving.txt 120 "$PY" benchmarks/shape_twin.py --config "$TWIN_CONFIG" --tokenizer-from "$TOKENIZER" \
  --out "$TWIN" --device "$DEVICE" "${LAYERS[@]}"
step serving.txt 170 "$PY" benchmarks/bench_serving.py --start-hearth --hearth-args \
  "--models $TWIN/models.yaml --device $DEVICE --max-num-seqs 128 --kv-cache-memory-gib $KV_GIB --max-num-batched-tokens 2048" \
  --concurrency "${LEVELS[@]}" --requests-per-client 1 --min-requests 4 --max-tokens "$TOKENS" --ignore-eos \
  --plot /tmp/hearth-serving.png
cp benchmarks/out/hearth.log "$OUT/serving-server.log" 2>/dev/null
# 7. transformers' generate on the same twin
step hf_generate.txt 200 "$PY" benchmarks/gpu/bench_hf_generate.py --model "$TWIN" --batches "${HF_BATCHES[@]}" \
  --max-tokens "$TOKENS" --device "$DEVICE" $([ "$DRY" = 1 ] && echo --no-compile)

echo "total $(($(date +%s) - START)) s" | tee -a "$OUT/summary.txt"
