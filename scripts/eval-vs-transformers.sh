#!/usr/bin/env bash
# `rlvr eval` against transformers, per task, on the same questions in one run: the greedy
# responses compared token by token, both scored by the same verifiers, and the generation time
# of each side (BENCHMARKS.md, "rlvr eval").
#
#   scripts/eval-vs-transformers.sh MODEL_DIR OUT [LIMIT] [MAX_NEW_TOKENS] [BATCH] [TASKS]
#
# MODEL_DIR: a Hugging Face model directory (scripts/smollm2.sh builds SmolLM2-135M-Instruct).
# OUT/TASK holds `rlvr eval`'s results.json and samples.jsonl, transformers' responses and
# their verdicts. Defaults: the first 200 questions of GSM8K and of IFEval, 512 new tokens, batches of 64 on
# both sides, 2 threads each; TASKS (space-separated) defaults to "gsm8k ifeval".
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"; OUT="$2"; LIMIT="${3:-200}"; NEW="${4:-512}"; BATCH="${5:-64}"; TASKS="${6:-gsm8k ifeval}"; THREADS=2
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv "torch, transformers" torch==2.11.0 transformers
make --no-print-directory build >/dev/null
RLVR="$CARGO_TARGET_DIR/release/rlvr"
mkdir -p "$OUT"
for task in $TASKS; do
  out="$OUT/$task"
  OMP_NUM_THREADS=$THREADS "$RLVR" eval --model "$MODEL" --tasks "$task" --limit "$LIMIT" \
    --max-new-tokens "$NEW" --batch "$BATCH" --out "$out" >"$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  OMP_NUM_THREADS=$THREADS "$BENCH_PYTHON" scripts/eval-vs-transformers.py "$MODEL" "$out" "$NEW" \
    "$BATCH" "$THREADS" >"$out/transformers.json" 2>"$out/transformers.log" \
    || { cat "$out/transformers.log"; exit 1; }
  "$RLVR" verify --input "$out/transformers-verify.jsonl" >"$out/transformers-verdicts.jsonl" 2>/dev/null
  python3 - "$task" "$out" <<'PY'
import json, sys
task, out = sys.argv[1], sys.argv[2]
ours = json.load(open(f"{out}/results.json"))
theirs = json.loads(open(f"{out}/transformers.json").read())
verdicts = [json.loads(l) for l in open(f"{out}/transformers-verdicts.jsonl")]
if task == "ifeval":
    strict = sum(all(v["strict"]) for v in verdicts) / len(verdicts)
    loose = sum(all(v["loose"]) for v in verdicts) / len(verdicts)
    t = ours["tasks"]["ifeval"]
    acc = f"prompt strict {t['prompt_strict']:.3f} vs {strict:.3f}, prompt loose {t['prompt_loose']:.3f} vs {loose:.3f}"
else:
    acc = f"accuracy {ours['tasks'][task]['accuracy']:.3f} vs {sum(v['verified'] for v in verdicts) / len(verdicts):.3f}"
print(f"{task}: {theirs['questions']} questions; rlvr vs transformers: {acc}")
print(f"  responses that differ: {theirs['differ'].get(task, 0)} of {theirs['questions']}")
for d in theirs["differences"].get(task, []):
    print(f"    question {d['id']}: first differing token {d['first_differing_token']} "
          f"(rlvr {d['rlvr_tokens']} tokens, transformers {d['transformers_tokens']})")
print(f"  time: rlvr eval {ours['seconds']:.1f} s (load, generation, scoring), transformers generate "
      f"{theirs['seconds']:.1f} s (generation only, {theirs['new_tokens']} tokens): "
      f"{theirs['seconds'] / ours['seconds']:.2f}x")
PY
done
