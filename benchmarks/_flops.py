"""FLOPs of an exported ONNX graph, counted from the graph itself (shape inference + weight shapes).

Why: "patterns/s" says nothing about how close an engine runs to the machine; FLOPs per pattern x
patterns/s = achieved GFLOP/s, which can be set beside a float32 GEMM measured on the same threads.
Counted: Conv / ConvTranspose / MatMul / Gemm multiply-adds, as 2 FLOPs each (one FMA = 2 FLOPs, the
convention GEMM GFLOP/s figures use). Not counted: element-wise ops, pooling, resize (memory-bound, a
few % of the multiply-adds here); they are listed by :func:`op_counts`.
"""

from __future__ import annotations

import collections
import math
from typing import Any


def _shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of every value (the batch dimension, symbolic, as 1)."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    out: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in inferred.graph.initializer:
        out[init.name] = list(init.dims)
    return out


def macs_per_sample(model: Any) -> dict[str, int]:
    """Multiply-adds per batch element, per op type (``Conv``, ``MatMul``, …)."""
    shapes = _shapes(model)
    macs: dict[str, int] = collections.Counter()
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes[node.input[1]]  # Conv [Cout, Cin/g, kh, kw]; ConvTranspose [Cin, Cout/g, kh, kw]
            if node.op_type == "Conv":
                out = shapes[node.output[0]]  # [1, Cout, H, W]
                macs[node.op_type] += math.prod(w) * math.prod(out[2:])
            else:
                inp = shapes[node.input[0]]
                macs[node.op_type] += math.prod(w) * math.prod(inp[2:])
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            macs[node.op_type] += math.prod(a) * b[-1]
    return dict(macs)


def op_counts(model: Any) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in model.graph.node))


def flops_per_pattern(model: Any, patterns_per_sample: int) -> float:
    """2 x multiply-adds per sample / patterns per sample (gridsize²)."""
    return 2.0 * sum(macs_per_sample(model).values()) / patterns_per_sample
