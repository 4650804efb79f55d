"""GraphBuilder (converters/onnx/graph.py): unique names, deduplicated constants, opset-dependent forms."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from converters.onnx.graph import GraphBuilder  # noqa: E402


def test_names_are_unique_and_reserved_names_are_skipped() -> None:
    g = GraphBuilder(17)
    g.reserve("x")
    assert g.op("Relu", ["in"], "x") == "x_2"
    assert g.op("Relu", ["in"], "x") == "x_3"
    assert g.op("Relu", ["in"], "y") == "y"
    assert [n.name for n in g.nodes] == ["x_2", "x_3", "y"]
    assert [list(n.output) for n in g.nodes] == [["x_2"], ["x_3"], ["y"]]


def test_constants_are_deduplicated_by_dtype_value_and_shape() -> None:
    g = GraphBuilder(17)
    a = g.const(1.0, name="one")
    assert g.const(np.float32(1.0), name="other") == a
    assert g.const(1, np.int64, name="one") != a  # same value, other dtype
    assert g.const([1.0], name="one") != a  # same value, other shape
    assert g.ints([0, 1]) == g.ints((0, 1))
    assert len(g.initializers) == 4


@pytest.mark.parametrize("opset,attr", [(17, True), (18, False)])
def test_reduce_axes_form_follows_the_opset(opset: int, attr: bool) -> None:
    g = GraphBuilder(opset)
    g.reduce("ReduceMean", "x", [1], "mean")
    node = g.nodes[-1]
    assert (len(node.input) == 1) is attr
    assert any(a.name == "axes" for a in node.attribute) is attr
    g.reduce("ReduceSum", "x", [1], "sum")  # axes has been an input since opset 13
    assert len(g.nodes[-1].input) == 2
