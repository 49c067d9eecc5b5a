#!/usr/bin/env bash
# Training throughput of rlvr's learner against PyTorch eager (transformers' LlamaForCausalLM,
# torch's AdamW), side by side in one session on the same machine, model, batch, sequence
# length and thread count, with the same torch 2.11; and rlvr's MFU against a measured matmul peak.
# MODEL_DIR=DIR benchmarks a real checkpoint (both sides load it) instead of random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv "torch, transformers" torch==2.11.0 transformers
make --no-print-directory build >/dev/null
THREADS="${THREADS:-$(nproc)}"
SHAPE=(--batch "${BATCH:-4}" --seq-len "${SEQ_LEN:-256}" --threads "$THREADS")
ARGS=("${SHAPE[@]}" --steps "${STEPS:-2}")
if [ -n "${MODEL_DIR:-}" ]; then
  MODEL="$MODEL_DIR"
  OURS=(--model "$MODEL_DIR")
else
  MODEL=$(mktemp -d)
  trap 'rm -rf "$MODEL"' EXIT
  OURS=()
  "$CARGO_TARGET_DIR/release/rlvr" bench train "${SHAPE[@]}" --steps 1 --save-model "$MODEL" --json >/dev/null
fi
# Alternate the two sides PAIRS times (this machine's speed drifts over minutes); the median
# of the per-pair ratios is the figure.
results=()
for _ in $(seq "${PAIRS:-3}"); do
  ours=$("$CARGO_TARGET_DIR/release/rlvr" bench train "${ARGS[@]}" "${OURS[@]}" --json)
  theirs=$("$BENCH_PYTHON" benches/train_torch.py "$MODEL" "${ARGS[@]}" 2>/dev/null)
  echo "rlvr:          $ours"
  echo "pytorch eager: $theirs"
  results+=("$ours" "$theirs")
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
pairs = list(zip(runs[0::2], runs[1::2]))
ratios = [o["tokens_per_s"] / t["tokens_per_s"] for o, t in pairs]
for (o, t), r in zip(pairs, ratios):
    print(f"training tokens/s: rlvr {o['tokens_per_s']:.1f}, pytorch eager {t['tokens_per_s']:.1f}: {r:.2f}x")
print(f"median ratio {statistics.median(ratios):.2f}x over {len(ratios)} pairs")
mfu = statistics.median(o["mfu"] for o, _ in pairs)
o = pairs[0][0]
print(f"rlvr MFU (median) {100 * mfu:.1f}% of a measured {o['matmul_peak_gflop_s']:.0f} GFLOP/s f32 matmul peak")
PY
