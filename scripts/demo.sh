#!/usr/bin/env bash
# The main job on the bundled sample: install the core package with the ONNX engine and the reconstruct
# extra (no TensorFlow, no PyTorch), write the trained sample archive and a held-out simulated scan (a Siemens
# star the model never saw in training), inspect and validate the archive, then reconstruct the scan into
# ./demo-output/reconstruction/ (comparison.png: the reconstruction beside the true object; the SSIM, PSNR and
# FRC figures are printed and kept in reconstruct.json under "quality").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e ".[onnx,reconstruct]" 2>&1 | grep -v "is ignored: it is neither" || true
out=demo-output
mkdir -p "$out"
.venv/bin/ptycho-bridge sample -o "$out/sample" --force
.venv/bin/ptycho-bridge inspect "$out/sample/wts.h5.zip"
.venv/bin/ptycho-bridge validate "$out/sample/wts.h5.zip"
.venv/bin/ptycho-bridge reconstruct "$out/sample/wts.h5.zip" "$out/sample/dataset.npz" -o "$out/reconstruction" --force
echo "demo output in ./$out/ (reconstruction beside the true object: ./$out/reconstruction/comparison.png;" \
     "amplitude.png, phase.png, object.npz, reconstruct.json)"
