#!/usr/bin/env bash
# How far the engine's sampled-token log-probs are from the learner's recomputed ones (one full
# forward pass each, batch 1), per token as a maximum, with the engine at batch 1, 8 and 64, in
# f32 and bf16: `rlvr bench generate`'s `logprob_max_abs_diff` over the first 8 completions.
#
#   scripts/logprob-parity.sh [MODEL_DIR] [--device cuda]
#
# MODEL_DIR: a real checkpoint (default: random weights of SmolLM2-135M's shape).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
make --no-print-directory build >/dev/null
MODEL=()
if [ -n "${1:-}" ] && [ "${1:0:2}" != "--" ]; then MODEL=(--model "$1"); shift; fi
echo "| dtype | engine batch | per-token max abs Δ log p | decode step ms |"
echo "|---|---|---|---|"
for dtype in f32 bf16; do
  for batch in 1 8 64; do
    "$CARGO_TARGET_DIR/release/rlvr" bench generate "${MODEL[@]}" "$@" --dtype "$dtype" --batch "$batch" \
      --prompt-len 16 --new-tokens 32 --repeats 1 --json |
      python3 -c 'import json, sys
r = json.load(sys.stdin)
print("| %s | %d | %.2e | %.1f |" % (r["dtype"], r["batch"], r["logprob_max_abs_diff"], r["step_ms"]))'
  done
done
