#!/usr/bin/env bash
# The GPU check, prepared to run once on a machine with CUDA, torch and transformers (no network needed), in
# under 8 minutes; every part skips with a message when what it needs is missing, and the summary says which.
#
#   1. the scoring contract for TfLM on the device (tests/backends/test_backend_tf.py through AUTOCOG_TEST_DEVICE /
#      AUTOCOG_TEST_DTYPE), float32 and bfloat16 (bf16's tolerance: TOLERANCES in that file)
#   2. bench/choose.py on SmolLM2: choose against the one-pass limit, float32 and bfloat16
#   3. bench/batch.py on SmolLM2: the batch API against the one-pass limit, float32 and bfloat16
#   4. the lm-eval comparisons: bench/lm_eval_parallel.py (2 processes against 1: one replica per GPU with 2+ GPUs,
#      two replicas on one GPU with one) and bench/lm_eval_compare.py (autocog against lm-eval's hf model)
#   5. LLaMa with n_gpu_layers=-1 against the CPU (needs a llama-cpp-python built with GPU offload)
#
# Usage:  bench/gpu_check.sh [--device cuda|cpu] [--out DIR] [--quick] [--wheels DIR]
#   --device   where TfLM runs (default cuda; env AUTOCOG_GPU_CHECK_DEVICE)
#   --out      the results folder (default $OUT when set, else bench/results): gpu_check.txt (everything, with the
#              summary at its end) and the benchmarks' JSON
#   --quick    the tiny test model and small sizes: a dry run of the script itself (on the CPU, about 3 minutes)
#   --wheels   a folder of wheels for missing Python packages (gguf, pytest; lm-eval with its own deps), installed offline
#              (pip --no-index --no-deps --target) into the results folder, never into the system's Python
#   PYTHON     the interpreter (default python3)
#
#   bench/gpu_check.sh --device cpu --quick --out /tmp/gpu_check      # the dry run (CPU)
#   bench/gpu_check.sh                                                 # on the GPU machine
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE="${AUTOCOG_GPU_CHECK_DEVICE:-cuda}"
OUT_DIR="${OUT:-$ROOT/bench/results}"
QUICK=0
WHEELS=""
PY="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.txt"
: > "$LOG"
START=$(date +%s)
BUDGET=${AUTOCOG_GPU_CHECK_SECONDS:-450}  # 7.5 minutes for all parts; each part's timeout is what is left
SUMMARY=()

cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -n "$WHEELS" ]; then
    SITE="$OUT_DIR/site-packages"
    for pkg in gguf pytest pluggy iniconfig lm_eval; do
        "$PY" -c "import $pkg" 2>/dev/null && continue
        "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$SITE" "${pkg/_/-}" >>"$LOG" 2>&1 \
            || echo "no wheel for $pkg in $WHEELS" | tee -a "$LOG"
    done
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi

say() { echo "$*" | tee -a "$LOG"; }
has() { "$PY" -c "import $1" 2>/dev/null; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# part NAME NEEDS(comma-separated modules) COMMAND...: run with the time left, or skip with the reason
part() {
    local name="$1" needs="$2"; shift 2
    local missing=() m
    IFS=',' read -ra mods <<< "$needs"
    for m in "${mods[@]}"; do [ -n "$m" ] && ! has "$m" && missing+=("$m"); done
    if [ ${#missing[@]} -gt 0 ]; then
        say ""; say "=== $name: SKIPPED (missing Python package: ${missing[*]})"
        SUMMARY+=("$(printf '%-44s skipped: no %s' "$name" "${missing[*]}")"); return
    fi
    local budget; budget=$(left)
    if [ "$budget" -lt 20 ]; then
        say ""; say "=== $name: SKIPPED (out of time)"; SUMMARY+=("$(printf '%-44s skipped: out of time' "$name")"); return
    fi
    say ""; say "=== $name ($*)"
    local t0=$(date +%s) rc
    timeout "$budget" "$@" 2>&1 | grep --line-buffered -v -e "Loading weights" -e "it/s]" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local status="ok"
    [ "$rc" -eq 124 ] && status="TIMED OUT"
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && status="FAILED (exit $rc)"
    SUMMARY+=("$(printf '%-44s %-18s %4ds' "$name" "$status" $(( $(date +%s) - t0 )))")
}

say "autocog GPU check: device $DEVICE, quick $QUICK, results $OUT_DIR, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "transformers", "accelerate", "numpy", "pydantic", "jinja2", "gguf", "pytest", "lm_eval", "llama_cpp"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:<13} {getattr(module, '__version__', 'present')}")
    except Exception as error:
        print(f"  {name:<13} MISSING ({type(error).__name__})")
try:
    import torch
    print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count(),
          *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
    if torch.cuda.is_available():
        print("bf16 supported", torch.cuda.is_bf16_supported())
except Exception as error:
    print("torch:", error)
EOF

if [[ "$DEVICE" == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    say "CUDA is not available to torch here: run with --device cpu for a dry run"; exit 1
fi
N_GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

if [ "$QUICK" -eq 1 ]; then
    MODEL=tiny; CONTRACT_K=(-k "(random_choice or batch_equals or prefix_choices) and not Bfloat16")
    CHOOSE_ARGS=(--quick); BATCH_ARGS=(--prompts 4 --choices 8 --repeats 1); DOCS=24; QUESTIONS=8; HF_BATCH=4
else
    MODEL=smollm2; CONTRACT_K=(-k "not Bfloat16")  # TestTfLMBfloat16 is the CPU's bf16 run
    CHOOSE_ARGS=(); BATCH_ARGS=(--prompts 32 --choices 8 32 --repeats 3); DOCS=400; QUESTIONS=40; HF_BATCH=8,32
fi
# the embedded SmolLM2 in transformers form is converted from its GGUF (the gguf package) once, then cached
SMOL_NEEDS="torch,transformers"; [ "$MODEL" = smollm2 ] && SMOL_NEEDS="torch,transformers,gguf"

for dtype in float32 bfloat16; do
    part "contract TfLM $DEVICE $dtype" "torch,transformers,pytest" \
        env AUTOCOG_TEST_DEVICE="$DEVICE" AUTOCOG_TEST_DTYPE="$dtype" \
        "$PY" -m pytest -q -p no:cacheprovider tests/backends/test_backend_tf.py "${CONTRACT_K[@]}"
done
for dtype in float32 bfloat16; do
    part "choose.py $MODEL $DEVICE $dtype" "$SMOL_NEEDS" \
        "$PY" bench/choose.py --backend tf --model "$MODEL" --device "$DEVICE" --dtype "$dtype" "${CHOOSE_ARGS[@]}"
done
for dtype in float32 bfloat16; do
    part "batch.py $MODEL $DEVICE $dtype" "$SMOL_NEEDS" \
        "$PY" bench/batch.py --backend tf --model "$MODEL" --device "$DEVICE" --dtype "$dtype" "${BATCH_ARGS[@]}" \
        --memory-sizes
done

# 2 processes against 1: on 2+ GPUs rank r takes cuda:r; on one GPU both replicas share cuda:0
DP_DEVICE="$DEVICE"; [[ "$DEVICE" == cuda* ]] && [ "$N_GPUS" -lt 2 ] && DP_DEVICE="cuda:0"
DP_DTYPE=(); [[ "$DEVICE" == cuda* ]] && DP_DTYPE=(--dtype bfloat16)
part "lm-eval 2 processes vs 1 ($DP_DEVICE)" "$SMOL_NEEDS,lm_eval.evaluator" \
    "$PY" bench/lm_eval_parallel.py --model "$MODEL" --documents "$DOCS" --processes 1 2 --device "$DP_DEVICE" \
    "${DP_DTYPE[@]}" --json "$OUT_DIR/lm_eval_parallel.json"
part "lm-eval autocog vs hf ($DEVICE float32)" "$SMOL_NEEDS,lm_eval.evaluator,accelerate" \
    "$PY" bench/lm_eval_compare.py --model "$MODEL" --questions "$QUESTIONS" --hf-batch-sizes "$HF_BATCH" \
    --repeats 1 --device "$DEVICE" --json "$OUT_DIR/lm_eval_compare.json"

if has llama_cpp && "$PY" -c "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())" 2>/dev/null; then
    part "LLaMa n_gpu_layers=-1 vs CPU" "pytest,gguf" \
        "$PY" -m pytest -q -p no:cacheprovider tests/lm/test_llama.py -k n_gpu_layers
else
    say ""; say "=== LLaMa n_gpu_layers: SKIPPED (llama_cpp missing or built without GPU offload)"
    SUMMARY+=("$(printf '%-44s skipped: llama_cpp without GPU offload' 'LLaMa n_gpu_layers=-1 vs CPU')")
fi

say ""
say "=== summary (device $DEVICE, $(( $(date +%s) - START )) s in all)"
for line in "${SUMMARY[@]}"; do say "$line"; done
say "results: $LOG"
! printf '%s\n' "${SUMMARY[@]}" | grep -q -e FAILED -e "TIMED OUT"
