#!/usr/bin/env bash
# Download, on a machine with pip and a package registry, the wheels bench/gpu_check.sh
# installs on a GPU machine that lacks them: edlib's dependencies that a plain PyTorch image
# does not ship (GPU_FIGURES.md's H100 had torch, transformers, accelerate, peft, safetensors,
# scipy; not diffusers, pydantic, torchsde or bitsandbytes). Versions are the ones the CPU
# test suite runs with (requirements/ci.txt).
#
#     bash bench/fetch_gpu_wheels.sh && du -sh .whl     # carried wheels count towards a 64 MiB limit
#
# .whl/common/ holds the pure-Python wheels and bitsandbytes (one build for every Python);
# .whl/cpXY/ pydantic and its compiled core for each Python 3.10-3.13 (PYTHON_VERSIONS to
# change). bitsandbytes' wheel carries a library per CUDA version (43 MB); only those of
# BNB_CUDA (default 130 132: the CUDA 13 builds PyTorch 2.9+ wheels use) and the CPU one are
# kept, which brings it to a few MB, so the whole set fits the carry limit with the repository.
set -eu
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
PYTHON_VERSIONS="${PYTHON_VERSIONS:-3.10 3.11 3.12 3.13}"
BNB_CUDA="${BNB_CUDA:-130 132}"
COMMON=(
  diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2
  annotated-types==0.8.0 typing-inspection==0.4.5
  torchsde==0.2.6 trampoline==0.1.2
  bitsandbytes==0.50.2  # 8-bit AdamW of the SD1.5 lean preset; ships CUDA 13 builds
)
PER_PYTHON=(pydantic==2.14.3 pydantic_core==2.50.4)
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$tag")
done
rm -rf .whl
download() {  # download DIR PYTHON_VERSION WHEEL...
  local dir=$1 version=$2
  shift 2
  $PIP download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" -d "$dir" "$@"
}
download .whl/common 3.12 "${COMMON[@]}"
for version in $PYTHON_VERSIONS; do
  download ".whl/cp${version/./}" "$version" "${PER_PYTHON[@]}"
done

# Slim bitsandbytes: drop the CUDA libraries of other versions and their RECORD lines.
python3 - "$BNB_CUDA" .whl/common/bitsandbytes-*.whl <<'EOF'
import re, sys, zipfile
from pathlib import Path

keep = {f"libbitsandbytes_cuda{v}.so" for v in sys.argv[1].split()} | {"libbitsandbytes_cpu.so"}
for wheel in map(Path, sys.argv[2:]):
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        dropped = {n for n in src.namelist() if re.search(r"libbitsandbytes_\w+\.so$", n) and Path(n).name not in keep}
        for info in src.infolist():
            if info.filename in dropped:
                continue
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if line.split(",")[0] not in dropped).encode()
            dst.writestr(info, data)
    slim.replace(wheel)
    print(f"{wheel.name}: kept {sorted(keep)}, dropped {len(dropped)} libraries")
EOF
du -sh .whl .whl/*
