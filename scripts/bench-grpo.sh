#!/usr/bin/env bash
# Seconds per GRPO step: rlvr's actor graph against TRL's GRPOTrainer, side by side in one
# session on the same machine, model (the tiny-arith SFT checkpoint), batch (32 prompts x 8
# samples), response length, learning rate, beta and temperature, with the same torch 2.11.
# The first step of each is left out of the median (warm-up). STEPS (default 8) steps each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv "torch, transformers, trl" torch==2.11.0 transformers trl
make --no-print-directory build >/dev/null
RLVR="$CARGO_TARGET_DIR/release/rlvr"
MODEL=${MODEL:-runs/tiny-arith/tiny-arith-sft}
if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "no SFT model in $MODEL: running the tiny-arith pipeline's first two stages" >&2
  printf 'name = "pt-sft"\ndescription = "bench"\npipeline = ["tiny-arith-pretrain", "tiny-arith-sft"]\n' > /tmp/rlvr-bench-pt-sft.toml
  "$RLVR" run /tmp/rlvr-bench-pt-sft.toml --out runs/tiny-arith --overwrite >/dev/null 2>&1
fi
STEPS=${STEPS:-8}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$RLVR" run tiny-arith-rlvr --out "$OUT" --set model.name_or_path="$MODEL" --set train.max_steps="$STEPS" \
  --set rlvr.num_evals=1 --set 'data.eval_mix=[{dataset = "builtin:arith-rlvr", amount = 8, split = "test"}]' \
  >/dev/null 2>&1
ours=$(python3 - "$OUT/metrics.jsonl" <<'PY'
import json, statistics, sys
steps = [json.loads(l)["step_s"] for l in open(sys.argv[1]) if '"step_s"' in l]
print(json.dumps({"impl": "rlvr", "step_s": steps, "median_step_s": statistics.median(steps[1:])}))
PY
)
theirs=$("$BENCH_PYTHON" benches/grpo_trl.py --model "$MODEL" --steps "$STEPS" 2>/dev/null | tail -n 1)
echo "rlvr: $ours"
echo "trl:  $theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"seconds per GRPO step (median): rlvr {o['median_step_s']:.2f}, TRL {t['median_step_s']:.2f}: "
      f"rlvr takes {o['median_step_s'] / t['median_step_s']:.2f}x TRL's time")
PY
