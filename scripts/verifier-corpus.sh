#!/usr/bin/env bash
# Regenerate the verifiers' differential corpus (verifiers/tests/fixtures/corpus/, see
# scripts/verifier-corpus.py) with the Python references side by side.
#
#   scripts/verifier-corpus.sh OPEN_INSTRUCT_GIT_DIR
#
# OPEN_INSTRUCT_GIT_DIR: a git directory of allenai/open-instruct; the Tülu 3 release's
# `ground_truth_utils.py`, `math_utils.py` and `if_functions.py` are read from it at commit
# 9c2d44bec into a scratch directory (nothing of them is kept). NLTK's English `punkt_tab` model,
# which IFEval's sentence and word checks need, comes from the llama-index-core wheel on PyPI
# (its `_static/nltk_cache`), since GitHub, where NLTK downloads it from, is not reachable here.
set -euo pipefail
cd "$(dirname "$0")/.."
GIT_DIR="$1"
RELEASE=9c2d44bec
source scripts/bench-venv.sh
bench_venv "math_verify, sympy, antlr4, langdetect, nltk, immutabledict" \
  math-verify "antlr4-python3-runtime==4.11.*" langdetect nltk immutabledict packaging
ifeval_reference
CACHE="${RLVR_CACHE:-$HOME/.cache/rlvr}"
NLTK="$CACHE/nltk-data"
if [ ! -f "$NLTK/tokenizers/punkt_tab/english/abbrev_types.txt" ]; then
  mkdir -p "$CACHE/downloads/llama-index-core"
  "$BENCH_PYTHON" -m pip download --quiet --no-deps llama-index-core==0.14.25 \
    -d "$CACHE/downloads/llama-index-core"
  "$BENCH_PYTHON" - "$CACHE/downloads/llama-index-core" "$NLTK" <<'PY'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/llama_index_core-*.whl")[0])
prefix = "llama_index/core/_static/nltk_cache/"
for name in wheel.namelist():
    if name.startswith(prefix + "tokenizers/punkt_tab/") and not name.endswith("/"):
        target = sys.argv[2] + "/" + name[len(prefix):]
        import os; os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "wb").write(wheel.read(name))
PY
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/open_instruct"
touch "$WORK/open_instruct/__init__.py"
for f in ground_truth_utils.py math_utils.py if_functions.py; do
  git --git-dir="$GIT_DIR/.git" show "$RELEASE:open_instruct/$f" > "$WORK/open_instruct/$f" 2>/dev/null \
    || git --git-dir="$GIT_DIR" show "$RELEASE:open_instruct/$f" > "$WORK/open_instruct/$f"
done
NLTK_DATA="$NLTK" PYTHONPATH="$IFEVAL_REFERENCE" "$BENCH_PYTHON" scripts/verifier-corpus.py "$WORK/open_instruct"
