#!/usr/bin/env bash
# Download, on a machine with pip and a package registry, the wheels bench/gpu_check.sh
# installs on a GPU machine that lacks them (edlib's dependencies that a plain PyTorch image
# does not ship; GPU_FIGURES.md's H100 needed diffusers, bitsandbytes and importlib_metadata).
# They go to .whl/ (git-ignored), for Python 3.12 on x86-64 Linux; pass another version with
# PYTHON_VERSION=3.11. Versions are the ones the CPU test suite runs with.
#
#     bash bench/fetch_gpu_wheels.sh && du -sh .whl     # carried wheels count towards a 64 MiB limit
set -eu
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
WHEELS=(
  diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2
  pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
  torchsde==0.2.6 trampoline==0.1.2
  bitsandbytes==0.50.2  # the release GPU_FIGURES.md used: it ships a CUDA 13 build
  torchao==0.18.0  # stochastic rounding for full_bf16 (the SDXL lean preset)
)
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$tag")
done
$PIP download --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
  "${platforms[@]}" -d .whl "${WHEELS[@]}"
du -sh .whl
