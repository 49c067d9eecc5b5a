#!/usr/bin/env bash
# Verifier throughput of `rlvr verify` against the Python references on the same inputs, side by
# side in one session: GSM8K test solutions (x10) with Tülu 3's rule, MATH-500 reference
# solutions with HF math-verify, edited GSM8K solutions as responses to the 100 IF rows of the
# RLVR sample (x10 responses, x5) with the Tülu 3 IF functions, the 1,082 IFEval fixture
# responses (x5) with Google's IFEval checks (NLTK's punkt_tab model from `ifeval_reference`);
# single-threaded on both sides, rlvr
# also on 2 threads. Reads the evaluation sets and the RLVR sample in data/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/bench-venv.sh
bench_venv math_verify math-verify
ifeval_reference
make --no-print-directory build >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DATA=data
python3 - "$DATA" "$WORK" <<'PY'
import json, sys
data, work = sys.argv[1], sys.argv[2]
with open(f"{work}/gsm8k.jsonl", "w") as f:
    rows = [json.loads(l) for l in open(f"{data}/eval/gsm8k-test.jsonl")]
    for _ in range(10):
        for r in rows:
            f.write(json.dumps({"dataset": "gsm8k", "response": r["answer"],
                                "ground_truth": r["answer"].split("####")[-1].strip()}) + "\n")
with open(f"{work}/math.jsonl", "w") as f:
    for l in open(f"{data}/eval/math500.jsonl"):
        r = json.loads(l)
        f.write(json.dumps({"dataset": "MATH", "response": r["solution"], "ground_truth": r["answer"]}) + "\n")
import random
rng = random.Random(0)
answers = [json.loads(l)["answer"] for l in open(f"{data}/eval/gsm8k-test.jsonl")]
edits = [str.upper, str.lower, lambda t: t.replace(",", ""), lambda t: '"' + t + '"',
         lambda t: "<<A title>>\n" + t, lambda t: t + "\nP.S. " + rng.choice(answers),
         lambda t: t.replace("\n", "\n\n"), lambda t: t.replace("\n", "\n* * *\n"),
         lambda t: "\n".join("* " + l for l in t.split("\n")), lambda t: t + "\n******\n" + rng.choice(answers),
         lambda t: "Section 1\n" + t + "\nSection 2\n" + rng.choice(answers), lambda t: t.replace(" ", " *x* ", 2)]
with open(f"{work}/if.jsonl", "w") as f:
    rows = [json.loads(l) for l in open(f"{data}/testdata/rlvr-sample-300.jsonl")]
    for _ in range(5):
        for r in (r for r in rows if r["dataset"] == "ifeval"):
            for _ in range(10):
                text = rng.choice(answers)
                for edit in rng.sample(edits, rng.randrange(4)):
                    text = edit(text)
                f.write(json.dumps({"dataset": "ifeval", "response": text, "ground_truth": r["ground_truth"]}) + "\n")
prompts = {}
for l in open(f"{data}/eval/ifeval.jsonl"):
    r = json.loads(l)
    prompts[r["key"]] = {k: r[k] for k in ["prompt", "instruction_id_list", "kwargs"]}
with open(f"{work}/ifeval.jsonl", "w") as f:
    for _ in range(5):
        for l in open("verifiers/tests/fixtures/ifeval/reference.jsonl"):
            r = json.loads(l)
            if r["key"] in prompts:
                f.write(json.dumps({"dataset": "google_ifeval", "response": r["response"],
                                    "ground_truth": json.dumps(prompts[r["key"]])}) + "\n")
PY
cat "$WORK/gsm8k.jsonl" "$WORK/math.jsonl" "$WORK/if.jsonl" "$WORK/ifeval.jsonl" > "$WORK/all.jsonl"
for mode in tulu3 default; do
  for threads in 1 2; do
    echo "rlvr ($mode, $threads thread(s)):"
    "$CARGO_TARGET_DIR/release/rlvr" bench verify --mode $mode --threads $threads --repeats 20 \
      --input "$WORK/all.jsonl" | tee "$WORK/rlvr-$mode-$threads.jsonl"
  done
done
# The reference logs every text langdetect cannot place; keep stderr for failures only.
py=$(OMP_NUM_THREADS=1 PYTHONPATH="$IFEVAL_REFERENCE" "$BENCH_PYTHON" benches/verify_reference.py "$WORK/all.jsonl" 2>"$WORK/py.err") \
  || { cat "$WORK/py.err"; exit 1; }
echo "python: $py"
python3 - "$WORK" "$py" <<'PY'
import json, sys
work, py = sys.argv[1], json.loads(sys.argv[2].strip().splitlines()[-1])
print("one thread each; rlvr's reward path (and with reasons) against the Python reference:")
for mode in ("tulu3", "default"):
    for line in open(f"{work}/rlvr-{mode}-1.jsonl"):
        r = json.loads(line)
        base = py[r["dataset"]]["answers_per_s"]
        print(f"  {mode:7s} {r['dataset']:14s} {r['answers_per_s']:12,.0f}/s "
              f"({r['answers_per_s_with_reasons']:12,.0f}/s) vs {base:10,.0f}/s: "
              f"{r['answers_per_s'] / base:7.1f}x ({r['answers_per_s_with_reasons'] / base:.1f}x)")
PY
