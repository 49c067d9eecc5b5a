#!/usr/bin/env bash
# Every RL algorithm and off-policy correction on tiny-arith-rlvr, from one SFT model: each run
# is the recipe with only the keys below changed, plus two updates per step (mini-batches of
# 128 of the 256 responses) so the second update is off-policy and the clip ranges matter, and
# held-out accuracy every 5 steps. Prints the held-out curves, the train/rollout mismatch (its
# per-token maximum over the run, the means of its KL and corrected share per step), the
# largest policy-version gap, what dynamic sampling dropped, and the stage's wall time per step
# (evaluations included, the same 13 in every run) as a Markdown table (BENCHMARKS.md "RL
# algorithms").
#
#   scripts/algorithms.sh OUT [SFT_MODEL_DIR]
#
# Without SFT_MODEL_DIR the tiny-arith pipeline's first two stages run first (into OUT/sft).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
OUT=${1:?usage: scripts/algorithms.sh OUT [SFT_MODEL_DIR]}
mkdir -p "$OUT"
make --no-print-directory build >/dev/null
RLVR="$CARGO_TARGET_DIR/release/rlvr"
SFT=${2:-}
if [ -z "$SFT" ]; then
  "$RLVR" run tiny-arith-pretrain --out "$OUT/sft" --overwrite
  "$RLVR" run tiny-arith-sft --out "$OUT/sft" \
    --set model.name_or_path="$OUT/sft/tiny-arith-pretrain"
  SFT="$OUT/sft/tiny-arith-sft"
fi
COMMON=(--set model.name_or_path="$SFT" --set rlvr.local_mini_batch_size=128 --set rlvr.num_mini_batches=2
  --set rlvr.num_evals=12)
declare -A RUNS=(
  [ppo]="rlvr.algorithm=ppo"
  [grpo]="rlvr.algorithm=grpo"
  [dapo]="rlvr.algorithm=dapo rlvr.cliprange_high=0.28 rlvr.overlong_buffer_length=8 rlvr.mask_truncated_completions=true"
  [gspo]="rlvr.algorithm=gspo rlvr.cliprange_low=0.0003 rlvr.cliprange_high=0.0004 rlvr.loss_aggregation=sequence"
  [cispo]="rlvr.algorithm=cispo rlvr.cliprange_low=1.0 rlvr.cliprange_high=0.28"
  [rloo]="rlvr.algorithm=rloo"
  [reinforce_pp]="rlvr.algorithm=reinforce_pp"
  [reinforce_pp_baseline]="rlvr.algorithm=reinforce_pp_baseline"
  [grpo-async]="rlvr.algorithm=grpo rlvr.async_mode=true"
  [grpo-async-tis]="rlvr.algorithm=grpo rlvr.async_mode=true rlvr.off_policy_correction=tis"
  [grpo-async-icepop]="rlvr.algorithm=grpo rlvr.async_mode=true rlvr.off_policy_correction=icepop"
  [grpo-staleness-4]="rlvr.algorithm=grpo rlvr.async_mode=true rlvr.max_staleness=4"
  [grpo-top-p]="rlvr.algorithm=grpo rlvr.top_p=0.9"
)
ORDER=(ppo grpo dapo gspo cispo rloo reinforce_pp reinforce_pp_baseline grpo-async grpo-async-tis grpo-async-icepop grpo-staleness-4 grpo-top-p)
for name in "${ORDER[@]}"; do
  sets=()
  for kv in ${RUNS[$name]}; do sets+=(--set "$kv"); done
  echo "== $name: ${RUNS[$name]}"
  /usr/bin/time -f "$name wall %e s" "$RLVR" run tiny-arith-rlvr --out "$OUT/$name" --overwrite \
    "${COMMON[@]}" "${sets[@]}" 2>&1 | grep -E "held-out accuracy .* -> |wall" || true
done
python3 - "$OUT" "${ORDER[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| run | held-out accuracy at steps 0, 5, ..., 60 | mismatch: max abs Δ log p | KL (mean) | corrected (mean) | clipfrac (mean) | gap (max) | groups dropped | stage s per step |")
print("|---|---|---|---|---|---|---|---|---|")
for name in names:
    recs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    steps = [r for r in recs if r.get("stage") == "rlvr" and "mismatch_kl" in r]
    evals = [r["eval_accuracy"] for r in recs if r.get("stage") == "rlvr" and "eval_accuracy" in r]
    mean = lambda k: sum(r[k] for r in steps) / len(steps)
    sampling = [r["sampling"] for r in steps if "sampling" in r]
    dropped = (f"{sum(s['groups_dropped'] for s in sampling)} of {sum(s['groups_sampled'] for s in sampling)}"
               if sampling else "-")
    print(f"| {name} | {' '.join(f'{a:.3f}' for a in evals)} | {max(r['mismatch_max_abs_logprob_diff'] for r in steps):.2e}"
          f" | {mean('mismatch_kl'):.1e} | {mean('mismatch_corrected_fraction'):.1e} | {mean('clipfrac'):.4f}"
          f" | {max(r['policy_version_gap'] for r in steps)} | {dropped} | {steps[-1]['elapsed_s'] / len(steps):.2f} |")
PY
