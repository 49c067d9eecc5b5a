#!/usr/bin/env bash
# Regenerate verifiers/tests/fixtures/ifeval/reference.jsonl with the reference IFEval checks
# (see `ifeval_reference` in bench-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-venv.sh
ifeval_reference
PYTHONPATH="$IFEVAL_REFERENCE" "$BENCH_PYTHON" scripts/ifeval-fixtures.py verifiers/tests/fixtures/ifeval/reference.jsonl
