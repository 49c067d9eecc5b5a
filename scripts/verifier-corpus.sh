#!/usr/bin/env bash
# Regenerate the verifiers' differential corpus (verifiers/tests/fixtures/corpus/, see
# scripts/verifier-corpus.py) with the Python references side by side.
#
#   scripts/verifier-corpus.sh OPEN_INSTRUCT_GIT_DIR
#
# OPEN_INSTRUCT_GIT_DIR: a git directory of allenai/open-instruct; the Tülu 3 release's
# `ground_truth_utils.py`, `math_utils.py` and `if_functions.py` are read from it at commit
# 9c2d44bec into a scratch directory (nothing of them is kept). NLTK's English `punkt_tab` model,
# which IFEval's sentence and word checks need, comes from `ifeval_reference` (bench-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GIT_DIR="$1"
RELEASE=9c2d44bec
source scripts/bench-venv.sh
bench_venv "math_verify, langdetect, nltk, immutabledict" math-verify langdetect nltk immutabledict packaging
ifeval_reference
CACHE="${RLVR_CACHE:-$HOME/.cache/rlvr}"
# The release's own environment for its functions: sympy 1.12, antlr4 4.11, mpmath 1.3
# (open-instruct's requirements.txt at the release).
TULU3="$CACHE/tulu3-venv"
if [ ! -x "$TULU3/bin/python" ] || ! "$TULU3/bin/python" -c "import sympy, antlr4, langdetect" 2>/dev/null; then
  python3 -m venv "$TULU3"
  "$TULU3/bin/pip" install --quiet --disable-pip-version-check sympy==1.12 mpmath==1.3.0 \
    antlr4-python3-runtime==4.11.0 langdetect
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/open_instruct"
touch "$WORK/open_instruct/__init__.py"
for f in ground_truth_utils.py math_utils.py if_functions.py; do
  git --git-dir="$GIT_DIR/.git" show "$RELEASE:open_instruct/$f" > "$WORK/open_instruct/$f" 2>/dev/null \
    || git --git-dir="$GIT_DIR" show "$RELEASE:open_instruct/$f" > "$WORK/open_instruct/$f"
done
python3 scripts/verifier-corpus.py items
"$TULU3/bin/python" scripts/verifier-corpus.py tulu3 "$WORK/open_instruct"
PYTHONPATH="$IFEVAL_REFERENCE" "$BENCH_PYTHON" scripts/verifier-corpus.py references
