"""The ONNX Runtime engine behind the one engine protocol (:mod:`ptycho_bridge.ops.engines`).

Why a separate module: the registry reads ``NAME``/``REQUIRES``/``refusals`` without importing onnx
or onnxruntime; they are imported only when :func:`build` runs. The graph comes from
:mod:`converters.onnx.export`; session options (threads, no spinning) are set here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ptycho_bridge.spec.expressible import Refusal
from ptycho_bridge.spec.expressible import refusals as _refusals_for
from ptycho_bridge.spec.network import NetworkSpec

NAME = "onnx"
REQUIRES = ("onnx", "onnxruntime")
DESCRIPTION = "ONNX graph built from the canonical tensors, run by ONNX Runtime (CPU)"


def refusals(spec: NetworkSpec) -> list[Refusal]:
    """Every reason this engine cannot run ``spec`` (empty: it can)."""
    return _refusals_for(spec, "engine:onnx")


def build(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None = None) -> Any:
    """An ONNX Runtime session over the graph built from ``spec`` and ``tensors``."""
    from converters.onnx.export import build_onnx, make_session

    return make_session(build_onnx(spec, tensors), threads=threads)


def run(handle: Any, x_norm: np.ndarray) -> np.ndarray:
    """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → complex64 ``[B, Cout, N, N]``."""
    from converters.onnx.export import run_session

    return run_session(handle, x_norm)
