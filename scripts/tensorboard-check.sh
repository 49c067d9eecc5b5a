#!/usr/bin/env bash
# Open a run's TensorBoard event files with TensorBoard's own reader (EventAccumulator) and
# check them against metrics.jsonl: for every stage directory under RUN_DIR/tensorboard, every
# scalar tag at every step holds the values the stage's metrics.jsonl records hold (as f32).
#
#   scripts/tensorboard-check.sh RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: scripts/tensorboard-check.sh RUN_DIR}
source scripts/bench-venv.sh
bench_venv "tensorboard" tensorboard
"$BENCH_PYTHON" - "$RUN" <<'PY'
import collections, json, pathlib, struct, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = pathlib.Path(sys.argv[1])
records = [json.loads(line) for line in open(run / "metrics.jsonl")]
f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
stages = sorted((run / "tensorboard").iterdir())
assert stages, f"no stage directories in {run / 'tensorboard'}"
for d in stages:
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    want = collections.defaultdict(list)
    for r in (r for r in records if r.get("stage_name") == d.name and isinstance(r.get("step"), int)):
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                want[(k, r["step"])].append(f32(v))
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                        want[(f"{k}/{k2}", r["step"])].append(f32(v2))
    got = collections.defaultdict(list)
    for tag in tags:
        for e in acc.Scalars(tag):
            got[(tag, e.step)].append(e.value)
    differ = [k for k in set(want) | set(got) if sorted(want[k]) != sorted(got[k])]
    print(f"{d.name}: {len(tags)} tags, {sum(map(len, got.values()))} scalars read by TensorBoard, "
          f"{len(differ)} (tag, step) pairs differ from metrics.jsonl")
    assert tags and not differ, differ[:5]
PY
