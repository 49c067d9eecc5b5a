#!/usr/bin/env bash
# Generation throughput of rlvr's native engine against transformers' `generate`, side by side
# in one session on the same machine, model, batch and sampling, with the same torch 2.11.
# MODEL_DIR=DIR benchmarks a real checkpoint (both sides load it) instead of random weights.
# BATCH prompts x SAMPLES completions each (the RL shape: SAMPLES=8), PROMPT_LEN, NEW_TOKENS.
# KV_CACHE_GIB fixes rlvr's KV cache (its samples share their prompt's blocks); PROMPTS_PER_CALL
# runs transformers' batch in calls of that many prompts, for shapes whose unshared cache does
# not fit in memory at once (the 256-prompt RL shape on a 24 GiB machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv "torch, transformers" torch==2.11.0 transformers
make --no-print-directory build >/dev/null
if [ -n "${MODEL_DIR:-}" ]; then
  MODEL="$MODEL_DIR"
  OURS=(--model "$MODEL_DIR")
else
  MODEL=$(mktemp -d)
  trap 'rm -rf "$MODEL"' EXIT
  OURS=(--save-model "$MODEL")
fi
ARGS=(--batch "${BATCH:-32}" --samples "${SAMPLES:-1}" --prompt-len "${PROMPT_LEN:-16}" --new-tokens "${NEW_TOKENS:-128}" --repeats "${REPEATS:-1}")
# The two sides alternate, ROUNDS times each: this machine's speed drifts over minutes, and
# back-to-back blocks of one side then the other would compare different phases of it. Each
# round rebuilds the same seeded model; the best round of each side is reported.
ours=() theirs=()
for _ in $(seq "${ROUNDS:-3}"); do
  ours+=("$("$CARGO_TARGET_DIR/release/rlvr" bench generate "${ARGS[@]}" "${OURS[@]}" ${KV_CACHE_GIB:+--kv-cache-gib "$KV_CACHE_GIB"} --json)")
  # rlvr turns on libtorch's huge pages for large CPU buffers (actors/src/main.rs); transformers
  # gets the same setting, so the ratio compares the engines on the same libtorch configuration.
  theirs+=("$(THP_MEM_ALLOC_ENABLE=1 "$BENCH_PYTHON" benches/generate_transformers.py "$MODEL" "${ARGS[@]}" ${PROMPTS_PER_CALL:+--prompts-per-call "$PROMPTS_PER_CALL"} 2>/dev/null)")
  echo "round: rlvr ${ours[-1]}"
  echo "round: transformers ${theirs[-1]}"
done
python3 - "${#ours[@]}" "${ours[@]}" "${theirs[@]}" <<'PY'
import json, sys
n = int(sys.argv[1])
ours = [json.loads(a) for a in sys.argv[2:2 + n]]
theirs = [json.loads(a) for a in sys.argv[2 + n:]]
print("rounds (rlvr / transformers tokens/s): " + ", ".join(
    f"{a['tokens_per_s']:.1f} / {b['tokens_per_s']:.1f} ({a['tokens_per_s'] / b['tokens_per_s']:.2f}x)"
    for a, b in zip(ours, theirs)))
o = max(ours, key=lambda r: r["tokens_per_s"])
t = max(theirs, key=lambda r: r["tokens_per_s"])
print(f"tokens/s, best round of each: rlvr {o['tokens_per_s']:.1f}, transformers {t['tokens_per_s']:.1f}: "
      f"{o['tokens_per_s'] / t['tokens_per_s']:.2f}x")
print(f"decode step {o['step_ms']:.1f} ms; bandwidth floor {o['bandwidth_floor_step_ms']:.1f} ms "
      f"({100 * o['fraction_of_bandwidth_bound']:.0f}% of the bound at {o['bandwidth_gb_s']:.1f} GB/s)")
print(f"weight update {o['weight_update_ms']:.1f} ms vs memcpy {o['weight_memcpy_ms']:.1f} ms "
      f"({o['weight_update_over_memcpy']:.2f}x); log-probs vs learner {o['logprob_max_abs_diff']:.1e}")
PY
