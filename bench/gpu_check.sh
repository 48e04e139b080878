#!/usr/bin/env bash
# Every GPU figure of bench/README.md in one call, most important first.
#
#     bash bench/gpu_check.sh [--budget SECONDS]     # from the repository root, one CUDA GPU
#     GPU_CHECK_TINY=1 bash bench/gpu_check.sh       # the same run with tiny models on a CPU (< 5 min)
#
# Order: SD1.5 reference b16 and edlib fast b16; reference b8 and edlib lean b8; SD1.5 LoRA;
# the SDXL rows; the sampling-memory check; the optimizer step at SDXL's shapes; the GPU-marked
# tests; then FLUX.1 and SD3.5 LoRA rows (issue 24) if time is left. Every row is printed and appended to $OUT/results.jsonl (else
# /tmp/edlib-gpu-check/results.jsonl) the moment it is measured; a row whose estimated time
# does not fit in what is left of the budget (default 530 s) is not started, and each stage
# is cut at what is left, so a call cut short keeps every row it measured.
#
# Packages: a plain PyTorch image lacks some of edlib's (diffusers, pydantic, bitsandbytes,
# ...). `bash bench/fetch_gpu_wheels.sh` puts wheels for Python 3.10-3.13 in .whl/ (common/
# and one folder per Python version); this script installs the common ones and those of the
# Python it runs, says which, and falls back to what is installed if they cannot be used.
set -u
cd "$(dirname "$0")/.."
BUDGET=530
while (($#)); do
  case $1 in
    --budget) BUDGET=$2; shift 2 ;;
    *) echo "usage: bash bench/gpu_check.sh [--budget SECONDS]" >&2; exit 2 ;;
  esac
done
BUDGET=${BUDGET%.*}
LOGS="${OUT:-/tmp/edlib-gpu-check}"
mkdir -p "$LOGS"
RESULTS="$LOGS/results.jsonl"
: >"$RESULTS"
PYTHON="${PYTHON:-python3}"
STEPS="${GPU_CHECK_STEPS:-6}"
TINY=()
SAMPLE_MEMORY=()
if [[ "${GPU_CHECK_TINY:-0}" == 1 ]]; then
  TINY=(--tiny)
  STEPS="${GPU_CHECK_STEPS:-2}"
  SAMPLE_MEMORY=(--steps 1 --sample-steps 2)
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SUMMARY="$LOGS/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# --- packages -------------------------------------------------------------------------------
PYV=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
SITE="${GPU_CHECK_SITE:-/tmp/site}"  # outside $OUT: what is under $OUT is copied back
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d .whl/common ]]; then
  wheels=(.whl/common/*.whl)
  if [[ -d .whl/$PYV ]]; then
    wheels+=(.whl/"$PYV"/*.whl)
  else
    note "no carried wheels for $PYV (pydantic's compiled core): using the installed pydantic, if any"
  fi
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${wheels[@]}" >"$LOGS/pip.log" 2>&1 && PYTHONPATH="$PYTHONPATH:$SITE" "$PYTHON" -c "import edlib.train.loop" >>"$LOGS/pip.log" 2>&1; then
    export PYTHONPATH="$PYTHONPATH:$SITE"
    note "installed for $PYV into $SITE: $(for w in "${wheels[@]}"; do basename "$w" | cut -d- -f1-2; done | tr '\n' ' ')"
  else
    note "the carried wheels could not be used (see pip.log): falling back to the installed packages"
  fi
else
  note "no wheels in .whl/: using the installed packages"
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PYTHON" -c 'import sys, torch, diffusers, transformers, accelerate, peft; print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda, "| diffusers", diffusers.__version__, "| transformers", transformers.__version__, "| accelerate", accelerate.__version__, "| peft", peft.__version__)' 2>&1
  "$PYTHON" -c 'import bitsandbytes; print("bitsandbytes", bitsandbytes.__version__)' 2>&1 | tail -n 1
} >"$LOGS/env.txt"
cat "$LOGS/env.txt" >>"$SUMMARY"

# --- stages ---------------------------------------------------------------------------------
left() { echo $((BUDGET - SECONDS)); }

# stage NAME COMMAND...: run with at most what is left of the budget; output to NAME.log and here.
stage() {
  local name=$1
  shift
  local limit
  limit=$(left)
  if ((limit < 20)); then
    note "$name: not started, $limit s of the budget left"
    return
  fi
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" |
    grep -E --line-buffered "^(device|reference|edlib|skipped|optimizer|torch AdamW|torchao|training peak|sampling|[0-9]+ (passed|failed|skipped|deselected)|FAILED|ERROR)" || true
  local rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    note "$name: cut at $limit s (rows measured so far are in results.jsonl)"
  else
    note "$name: exit $rc after $((SECONDS - start)) s"
  fi
}

# GPU_CHECK_SD15 / GPU_CHECK_SDXL: the rows of each model (empty: none); GPU_CHECK_FLOW: the
# FLUX/SD3.5 models, last (default "flux sd35l"); GPU_CHECK_SKIP: stages left out (e.g.
# "pytest"). A reduced run for CI uses them (tests/bench/test_gpu_check.py).
SD15_CASES="${GPU_CHECK_SD15-reference:16 fast:16 reference:8 lean:8 lora:16 lora-no-ckpt:16}"
SDXL_CASES="${GPU_CHECK_SDXL-reference:4 lean:4 lora:4 fast:4}"
wanted() { [[ " ${GPU_CHECK_SKIP:-} " != *" $1 "* ]]; }
TRAIN=(bench/train_gpu.py --steps "$STEPS" --warmup 2 --jsonl "$RESULTS" "${TINY[@]}")
# shellcheck disable=SC2086 # the case lists split into words on purpose
[[ -n $SD15_CASES ]] && stage sd15 "$PYTHON" "${TRAIN[@]}" --model sd15 --budget "$(left)" --cases $SD15_CASES
# shellcheck disable=SC2086
[[ -n $SDXL_CASES ]] && stage sdxl "$PYTHON" "${TRAIN[@]}" --model sdxl --budget "$(left)" --cases $SDXL_CASES
# Issue 4: sampling during a lean SD1.5 run must need no more memory than its training steps.
wanted sample_memory &&
  stage sample_memory "$PYTHON" bench/sample_memory_gpu.py --model sd15 --jsonl "$RESULTS" "${TINY[@]}" "${SAMPLE_MEMORY[@]}"
if wanted optim; then
  if [[ ${#TINY[@]} -eq 0 ]]; then
    stage optim "$PYTHON" bench/optim_bench.py --scale 1 --jsonl "$RESULTS"
  else
    stage optim "$PYTHON" bench/optim_bench.py --scale 256 --steps 2 --jsonl "$RESULTS"
  fi
fi
# Only the files that hold GPU tests: collecting the whole suite would import the notebook
# and browser test dependencies, which the GPU machine need not have.
GPU_TESTS=$(grep -rl "pytest.mark.gpu" tests --include='*.py' | sort)
# shellcheck disable=SC2086
wanted pytest && stage pytest "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider --junitxml "$LOGS/pytest.xml" $GPU_TESTS
if [[ -f "$LOGS/pytest.xml" ]]; then
  "$PYTHON" - "$LOGS/pytest.xml" "$RESULTS" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
row = {"bench": "pytest", "marker": "gpu", "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"], **counts, "failed": failed}
print("pytest -m gpu:", json.dumps(row))
open(sys.argv[2], "a").write(json.dumps(row) + "\n")
EOF
fi

# Issue 24: FLUX.1 and SD3.5 LoRA rows (bench/flow_cases.py), when the budget leaves time.
for model in ${GPU_CHECK_FLOW-flux sd35l}; do
  stage "$model" "$PYTHON" "${TRAIN[@]}" --model "$model"
done

note "--- results.jsonl: $(wc -l <"$RESULTS") row(s); total $SECONDS s of a $BUDGET s budget"
for model in sd15 sdxl; do
  cases=$SD15_CASES
  [[ $model == sdxl ]] && cases=$SDXL_CASES
  for case in $cases; do
    grep -q "\"model\": \"$model\".*\"case\": \"${case%:*}\", .*\"case_batch\": ${case#*:}," "$RESULTS" ||
      note "not measured: $model $case (alone: python bench/train_gpu.py --model $model --cases $case)"
  done
done
