"""The ONNX graph contract: input/output names, the symbolic batch dimension and the minimum opset.

Why a module of its own: the exporter (:mod:`converters.onnx.export` and the stages it emits) writes
these names into the graph and the runner (:mod:`converters.onnx.engine`) feeds and fetches them, so
they are defined once here, where both read them, and neither has to import the other's framework.

The contract (shared by every engine of the project, :mod:`ptycho_bridge.spec.conventions`):

- input ``amplitude``: float32 ``[B, C, N, N]``, the canonical ``x_norm`` (what the first conv sees);
- output ``object``: float32 ``[B, Cout, N, N, 2]``, the per-patch complex object with a trailing
  (real, imag) axis, the convention of ONNX's own ``DFT``;
- optional TF reassembly stage: extra input ``positions`` float32 ``[B, 1, 2, C]`` (TF's
  ``input_positions``) and extra output ``trimmed_object`` float32 ``[B, N, N, 1, 2]``.
"""

from __future__ import annotations

INPUT_NAME = "amplitude"
OUTPUT_NAME = "object"
POSITIONS_NAME = "positions"
TRIMMED_NAME = "trimmed_object"
BATCH_DIM = "B"
MIN_OPSET = 17
