#!/usr/bin/env bash
# The main job on the bundled sample: install the core package (no TensorFlow, no PyTorch),
# write the deterministic sample archive, inspect it and validate it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e . 2>&1 | grep -v "is ignored: it is neither" || true
out=$(mktemp -d)
.venv/bin/ptycho-bridge sample -o "$out"
.venv/bin/ptycho-bridge inspect "$out/wts.h5.zip"
.venv/bin/ptycho-bridge validate "$out/wts.h5.zip"
