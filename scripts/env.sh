# Sourced by the Makefile: where rlvr's build finds libtorch and keeps its build cache.
# A user with their own libtorch sets LIBTORCH (or LIBTORCH_USE_PYTORCH=1) before `make`.
RLVR_CACHE="${RLVR_CACHE:-$HOME/.cache/rlvr}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RLVR_CACHE/target}"
if [ -z "${LIBTORCH:-}" ] && [ -z "${LIBTORCH_USE_PYTORCH:-}" ]; then
  for d in "$RLVR_CACHE"/venv/lib/python3*/site-packages/torch; do
    [ -d "$d/lib" ] && export LIBTORCH="$d"
  done
fi
