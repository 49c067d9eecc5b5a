#!/usr/bin/env bash
# Build `rlvr` with NCCL process groups (cargo feature `nccl`) for GPU hosts. It links a CUDA
# build of libtorch: PyPI torch 2.11.0 with its CUDA 13 wheels, in the bench venv, plus the
# headers libtorch's CUDA headers include that those wheels lack (`crt/` from nvidia-cuda-crt,
# `nv/target` from nvidia-cuda-cccl). Its own
# target directory keeps the CPU build untouched. Prints the binary's path. On the GPU host, run
# it with LD_LIBRARY_PATH pointing at that host's torch/lib (scripts/device-check.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv "torch" torch==2.11.0
INCLUDE=$("$BENCH_PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu13", "include"))')
[ -f "$INCLUDE/crt/host_config.h" ] && [ -d "$INCLUDE/nv" ] \
  || "$BENCH_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
TORCH=$("$BENCH_PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LIBTORCH="$TORCH" CARGO_TARGET_DIR="${RLVR_CACHE:-$HOME/.cache/rlvr}/target-cuda"
cargo build --release --locked -p rlvr-actors --features nccl >&2
echo "$CARGO_TARGET_DIR/release/rlvr"
