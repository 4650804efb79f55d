"""A small graph builder over ``onnx.helper``, and the refusal every emitting stage raises.

Why a module of its own: the network (:mod:`converters.onnx.network`) and TF's reassembly stage
(:mod:`converters.onnx.reassembly`) are both emitted op by op into one graph; this class is the one
place that names intermediates uniquely, deduplicates constants and hides the few ops whose form
depends on the opset (``axes`` as an attribute or an input). ``onnx`` is imported only when a
builder is created or used.
"""

from __future__ import annotations

from typing import Any, Sequence

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ConversionRefused


class OnnxExportError(ConversionRefused):
    """The spec/tensors cannot be expressed exactly by this ONNX builder (message says why)."""


class GraphBuilder:
    """Collects nodes and initializers; names every intermediate uniquely after its role."""

    def __init__(self, opset: int) -> None:
        import onnx  # noqa: F401  (fail early, with the real ImportError, if onnx is missing)

        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def reserve(self, *names: str) -> None:
        """Keep ``names`` (the graph's own inputs) from being given to any node or initializer."""
        self._names.update(names)

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def initializer(self, name: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer named after ``name`` (made unique); returns its name."""
        from onnx import numpy_helper

        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C", copy=True), name=name))
        return name

    def const(self, value: Any, dtype: Any = np.float32, name: str = "const") -> str:
        """A (deduplicated) constant initializer."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            self._consts[key] = self.initializer(name, arr)
        return self._consts[key]

    def ints(self, values: Sequence[int], name: str = "ints") -> str:
        """A (deduplicated) int64 vector constant: shapes, axes, pads."""
        return self.const(list(values), np.int64, name)

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """Append one node; its single output (and node name) is ``name`` made unique, returned."""
        from onnx import helper

        out = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    # -- opset-dependent helpers ----------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: Sequence[int], name: str, keepdims: int = 1) -> str:
        """ReduceMean/ReduceMax/ReduceSum: ``axes`` became an input in opset 18 (13 for ReduceSum)."""
        axes_is_input = self.opset >= 18 or op_type == "ReduceSum"
        if axes_is_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], name, keepdims=keepdims)
        return self.op(op_type, [x], name, axes=list(axes), keepdims=keepdims)

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], name: str) -> str:
        return self.op(
            "Slice",
            [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "slice_axes")],
            name,
        )

    def unsqueeze(self, x: str, axes: Sequence[int], name: str) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "unsqueeze_axes")], name)

    def squeeze(self, x: str, axes: Sequence[int], name: str) -> str:
        return self.op("Squeeze", [x, self.ints(axes, "squeeze_axes")], name)

