#!/usr/bin/env bash
# The run's weight sync to a launched engine rank, measured in the run itself: launched ranks
# of smollm2-135m-rlvr on this machine (rank 0 learns; ranks 1..TP run one engine, split over TP
# tensor-parallel ranks when TP > 1, its first rank in the run's weight group), 3 GRPO steps of
# 2 prompts x 2 samples of 8 tokens. Prints each step's
# `export_s` (rank 0: making the new version; under ZeRO-3 it also sends it to the engine ranks
# as it gathers it), `broadcast_s` (publishing it until every engine has loaded it), their sum,
# and the engine/learner log-prob gap; the versions the engine's first rank logged; every rank's
# peak RSS.
#
# usage: [TP=N] scripts/bench-weight-group.sh BINARY OUTDIR ZERO_STAGE [MODEL_DIR] [PORT]
#   MODEL_DIR: SmolLM2-135M-Instruct (scripts/smollm2.sh makes it; default its cache path)
set -euo pipefail
BIN=$(realpath "${1:?usage: bench-weight-group.sh BINARY OUTDIR ZERO_STAGE [MODEL_DIR] [PORT]}")
OUT=${2:?OUTDIR}
ZERO=${3:?ZERO_STAGE (0: unsharded, device to device; 3: ZeRO-3, sent as gathered)}
MODEL=${4:-$HOME/.cache/rlvr/models/SmolLM2-135M-Instruct}
PORT=${5:-29760}
TP=${TP:-1}
WORLD=$((1 + TP))
rm -rf "$OUT" && mkdir -p "$OUT"
for rank in $(seq 0 $((WORLD - 1))); do
  OMP_NUM_THREADS=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT RANK=$rank WORLD_SIZE=$WORLD LOCAL_RANK=$rank \
    /usr/bin/time -v "$BIN" run smollm2-135m-rlvr --out "$OUT/run" --set model.name_or_path="$MODEL" \
    --set launch.gpus=$WORLD --set 'rlvr.actor_num_gpus_per_node=[1]' --set launch.zero_stage="$ZERO" \
    --set rlvr.vllm_tensor_parallel_size="$TP" \
    --set train.max_steps=3 --set rlvr.local_rollout_batch_size=2 --set rlvr.num_samples_per_prompt=2 \
    --set train.per_device_train_batch_size=4 --set rlvr.local_mini_batch_size=4 --set rlvr.response_length=8 \
    --set 'eval.tasks=[]' --set 'data.eval_mix=[{dataset = "builtin:word-problems", amount = 2, split = "test"}]' \
    > "$OUT/rank$rank.out" 2> "$OUT/rank$rank.err" &
done
wait
python3 - "$OUT/run/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "broadcast_s" in r:
        print(f"step {r['step']}: export_s {r['export_s']:.3f}, broadcast_s {r['broadcast_s']:.3f}, "
              f"sum {r['export_s'] + r['broadcast_s']:.3f}, "
              f"log-prob gap max {r['mismatch_max_abs_logprob_diff']:.3g}")
PY
grep -o "policy version .* arrived over the run's weight group.*" "$OUT/rank1.err" || true
for rank in $(seq 0 $((WORLD - 1))); do
  grep "Maximum resident set size" "$OUT/rank$rank.err" | sed "s/^\s*/rank $rank: /"
done
