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
