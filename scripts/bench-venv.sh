# Sourced by the bench scripts. The Python baselines need Python torch and friends; they go into
# a venv of their own ($RLVR_CACHE/bench-venv, several GB with torch's CUDA wheels) so the build
# venv stays small. `bench_venv MODULES PACKAGES...` installs PACKAGES unless MODULES import,
# and sets BENCH_PYTHON.
bench_venv() {
  local modules="$1"; shift
  local venv="${RLVR_CACHE:-$HOME/.cache/rlvr}/bench-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
  BENCH_PYTHON="$venv/bin/python"
}

# `ifeval_reference` puts Google's IFEval checks, as vendored in lm-evaluation-harness, into
# $IFEVAL_REFERENCE (for PYTHONPATH) with their dependencies in the bench venv, and NLTK's
# English `punkt_tab` model (its sentence and word counts) into $NLTK_DATA, exported. The lm_eval
# package itself imports torch and more; only its `lm_eval/tasks/ifeval` directory is taken out
# of the wheel. NLTK downloads `punkt_tab` from GitHub, which is not reachable here; the
# llama-index-core wheel on PyPI ships a copy (its `_static/nltk_cache`).
ifeval_reference() {
  bench_venv "langdetect, nltk, immutabledict, packaging" langdetect nltk immutabledict packaging
  IFEVAL_REFERENCE="${RLVR_CACHE:-$HOME/.cache/rlvr}/ifeval-reference"
  if [ ! -f "$IFEVAL_REFERENCE/lm_eval/tasks/ifeval/instructions.py" ]; then
    mkdir -p "$IFEVAL_REFERENCE/wheel"
    "$BENCH_PYTHON" -m pip download --quiet --no-deps lm_eval==0.4.13 -d "$IFEVAL_REFERENCE/wheel"
    "$BENCH_PYTHON" - "$IFEVAL_REFERENCE" <<'PY'
import glob, pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(glob.glob(str(work / "wheel" / "lm_eval-*.whl"))[0])
for name in wheel.namelist():
    if name.startswith("lm_eval/tasks/ifeval/"):
        wheel.extract(name, work)
for pkg in ["lm_eval", "lm_eval/tasks"]:
    (work / pkg / "__init__.py").touch()
PY
  fi
  export NLTK_DATA="${RLVR_CACHE:-$HOME/.cache/rlvr}/nltk-data"
  if [ ! -f "$NLTK_DATA/tokenizers/punkt_tab/english/abbrev_types.txt" ]; then
    local wheels="${RLVR_CACHE:-$HOME/.cache/rlvr}/downloads/llama-index-core"
    mkdir -p "$wheels"
    "$BENCH_PYTHON" -m pip download --quiet --no-deps llama-index-core==0.14.25 -d "$wheels"
    "$BENCH_PYTHON" - "$wheels" "$NLTK_DATA" <<'PY'
import glob, os, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/llama_index_core-*.whl")[0])
prefix = "llama_index/core/_static/nltk_cache/"
for name in wheel.namelist():
    if name.startswith(prefix + "tokenizers/punkt_tab/") and not name.endswith("/"):
        target = sys.argv[2] + "/" + name[len(prefix):]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "wb").write(wheel.read(name))
PY
  fi
}
