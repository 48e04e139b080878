#!/usr/bin/env bash
# One-command GPU check: the GPU-marked tests, then the SD1.5 and SDXL training benchmarks.
#
#     bash bench/gpu_check.sh            # from the repository root, on a machine with one CUDA GPU
#
# - Installs the wheels in .whl/ if there are any (packages the GPU machine lacks; see
#   bench/README.md for the list and `bench/fetch_gpu_wheels.sh`), into /tmp/site.
# - Writes its logs to $OUT if set (else /tmp/edlib-gpu-check): env.txt, pip.log, pytest.log,
#   sample_memory.log, sd15.log, sdxl.log, summary.txt.
# - Sized to end within GPU_CHECK_BUDGET_S seconds (default 530, under 9 minutes on an H100):
#   each stage gets at most its share of what is left, and the benchmarks print each row as
#   it is measured, so a stage cut short keeps its rows. The compiled ("fast") cases run last
#   in each benchmark because compiling takes minutes; summary.txt says what was cut, with
#   the command that measures it alone.
set -u
cd "$(dirname "$0")/.."
LOGS="${OUT:-/tmp/edlib-gpu-check}"
mkdir -p "$LOGS"
PYTHON="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET_S:-530}"
STEPS="${GPU_CHECK_STEPS:-6}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SUMMARY="$LOGS/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$LOGS/pip.log" 2>&1 || { note "wheel install failed: see pip.log"; exit 1; }
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  note "installed $(ls .whl/*.whl | wc -l) carried wheel(s)"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  note "no wheels in .whl/: using the installed packages"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PYTHON" -c 'import torch, diffusers, transformers, accelerate, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, "| diffusers", diffusers.__version__, "| transformers", transformers.__version__, "| accelerate", accelerate.__version__, "| peft", peft.__version__)' 2>&1
  "$PYTHON" -c 'import bitsandbytes; print("bitsandbytes", bitsandbytes.__version__)' 2>&1
} >"$LOGS/env.txt"
cat "$LOGS/env.txt" >>"$SUMMARY"

# stage NAME CAP_S COMMAND...: run with at most min(CAP_S, what is left of the budget).
stage() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  local limit=$((cap < left ? cap : left))
  if ((limit < 20)); then
    note "$name: skipped, budget spent"
    return
  fi
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  if ((rc == 124 || rc == 137)); then
    note "$name: cut at ${limit} s (rows measured so far are in $name.log)"
  else
    note "$name: exit $rc after $((SECONDS - start)) s"
  fi
}

# Only the files that hold GPU tests: collecting the whole suite would import the notebook
# and browser test dependencies, which the GPU machine need not have.
GPU_TESTS=$(grep -rl "pytest.mark.gpu" tests --include='*.py' | sort)
# GPU_CHECK_TINY=1: the tiny models on the CPU, to try this script itself without a GPU.
TINY=()
[[ "${GPU_CHECK_TINY:-0}" == 1 ]] && TINY=(--tiny)
declare -A CASES=([sdxl]="lean lora fast" [sd15]="lean lora lora-no-ckpt fast" [flux]="lora lora-fp8 lora-swap" [sd35l]="lora lora-fp8")
stage pytest 90 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS
# Issue 4: sampling during a lean SD1.5 run must need no more memory than its training steps.
stage sample_memory 90 "$PYTHON" bench/sample_memory_gpu.py --model sd15 "${TINY[@]}"
# SDXL first (issue 9's figures); SD1.5 gets what is left: its compiled case needs ~3 min more.
stage sdxl 300 "$PYTHON" bench/train_gpu.py --model sdxl --steps "$STEPS" --warmup 2 "${TINY[@]}"
stage sd15 300 "$PYTHON" bench/train_gpu.py --model sd15 --steps "$STEPS" --warmup 2 "${TINY[@]}"
# Issue 24: FLUX.1 and SD3.5 LoRA rows, when the budget leaves time (GPU_CHECK_BUDGET_S=1100 for all).
stage flux 300 "$PYTHON" bench/flow_cases.py --model flux --steps "$STEPS" --warmup 2 "${TINY[@]}"
stage sd35l 240 "$PYTHON" bench/flow_cases.py --model sd35l --steps "$STEPS" --warmup 2 "${TINY[@]}"

for name in pytest sample_memory sdxl sd15 flux sd35l; do
  [[ -f "$LOGS/$name.log" ]] || continue
  echo "--- $name" >>"$SUMMARY"
  if [[ $name == pytest ]]; then
    grep -E "passed|failed|error|skipped" "$LOGS/$name.log" | tail -n 3 >>"$SUMMARY"
    continue
  fi
  if [[ $name == sample_memory ]]; then
    grep -E "^(device|training|sampling|peaks|total)" "$LOGS/$name.log" >>"$SUMMARY"
    continue
  fi
  grep -E "^(device|  |reference|edlib|total)" "$LOGS/$name.log" >>"$SUMMARY"
  for case in ${CASES[$name]}; do
    grep -q "^edlib $case " "$LOGS/$name.log" ||
      echo "  not measured: $case (alone: python bench/train_gpu.py --model $name --cases $case)" >>"$SUMMARY"
  done
done
echo "--- total $SECONDS s" >>"$SUMMARY"
cat "$SUMMARY"
