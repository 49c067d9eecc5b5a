#!/usr/bin/env bash
# Verifier throughput of `rlvr verify` against the Python references on the same inputs, side by
# side in one session: GSM8K test solutions (x10) with Tülu 3's rule, MATH-500 reference
# solutions with HF math-verify, single-threaded on both sides; rlvr also on 2 threads.
# Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv math_verify math-verify
make --no-print-directory build >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DATA="${SHARED_DATA:-../shared/data}"
python3 - "$DATA" "$WORK" <<'PY'
import json, sys
data, work = sys.argv[1], sys.argv[2]
with open(f"{work}/gsm8k.jsonl", "w") as f:
    rows = [json.loads(l) for l in open(f"{data}/gsm8k/test.jsonl")]
    for _ in range(10):
        for r in rows:
            f.write(json.dumps({"dataset": "gsm8k", "response": r["answer"],
                                "ground_truth": r["answer"].split("####")[-1].strip()}) + "\n")
with open(f"{work}/math.jsonl", "w") as f:
    for l in open(f"{data}/math/test500.jsonl"):
        r = json.loads(l)
        f.write(json.dumps({"dataset": "MATH", "response": r["solution"], "ground_truth": r["answer"]}) + "\n")
PY
cat "$WORK/gsm8k.jsonl" "$WORK/math.jsonl" > "$WORK/all.jsonl"
for mode in tulu3 default; do
  for threads in 1 2; do
    echo "rlvr ($mode, $threads thread(s)):"
    "$CARGO_TARGET_DIR/release/rlvr" bench verify --mode $mode --threads $threads --input "$WORK/all.jsonl"
  done
done
echo "python: $(OMP_NUM_THREADS=1 "$BENCH_PYTHON" benches/verify_reference.py "$WORK/all.jsonl")"
