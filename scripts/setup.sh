#!/usr/bin/env bash
# Set up libtorch for building rlvr: a Python venv under $RLVR_CACHE (default
# ~/.cache/rlvr) holding PyPI torch 2.11.0 (CPU libraries are enough to build and run on CPU;
# the same binary uses CUDA on a GPU host with a CUDA-enabled libtorch). Idempotent: a second
# run checks one stamp file and exits.
#
# Skip it by bringing your own libtorch 2.11: export LIBTORCH=/path/to/libtorch, or
# LIBTORCH_USE_PYTORCH=1 with a python that has torch 2.11 installed.
set -euo pipefail

if [ -n "${LIBTORCH:-}" ] || [ -n "${LIBTORCH_USE_PYTORCH:-}" ]; then
  echo "setup: using LIBTORCH=${LIBTORCH:-} LIBTORCH_USE_PYTORCH=${LIBTORCH_USE_PYTORCH:-}"
  exit 0
fi

CACHE="${RLVR_CACHE:-$HOME/.cache/rlvr}"
VENV="$CACHE/venv"
STAMP="$VENV/.rlvr-torch-2.11.0"
PYTHON="${PYTHON:-python3}"

if [ -f "$STAMP" ]; then
  exit 0
fi

echo "setup: installing torch 2.11.0 (libtorch for tch 0.24) into $VENV"
mkdir -p "$CACHE"
"$PYTHON" -m venv "$VENV"
# --no-deps: libtorch_cpu needs only these two CUDA libraries to load; the full CUDA wheel set
# (several GB) is only useful on GPU hosts.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
  torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
ls "$VENV"/lib/python3*/site-packages/torch/lib/libtorch_cpu.so >/dev/null
touch "$STAMP"
echo "setup: done"
