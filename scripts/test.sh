#!/usr/bin/env bash
# Install everything the tests need into .venv (CPU builds, pinned) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet() { grep -v "is ignored: it is neither" || true; }
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
# Pinned CPU builds first, so the extras below are already satisfied (never a CUDA build).
.venv/bin/python -m pip install -q "torch==2.13.0" "tensorflow-cpu==2.21.0" 2>&1 | quiet
.venv/bin/python -m pip install -q -e ".[all,test]" 2>&1 | quiet
exec .venv/bin/python -m pytest -q "$@"
