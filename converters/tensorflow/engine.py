"""The Keras (TensorFlow) engine behind the one engine protocol (:mod:`ptycho_bridge.ops.engines`).

Why a separate, light module: the registry reads ``NAME``/``REQUIRES``/``refusals`` without importing
TensorFlow; TF is imported only when :func:`build` runs (the model itself is
:mod:`converters.tensorflow.keras_model`, which imports TF on first use, never at import). Thread
setup lives here, with the framework.
"""

from __future__ import annotations

from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.keras_model import build_keras_model, run_core, set_threads
from ptycho_bridge.spec import expressible
from ptycho_bridge.spec.expressible import Refusal
from ptycho_bridge.spec.network import NetworkSpec

NAME = "keras"
REQUIRES = ("tensorflow",)
DESCRIPTION = "Keras 3 / TensorFlow core model (converters/tensorflow/keras_model.py)"


def refusals(spec: NetworkSpec) -> list[Refusal]:
    """Every reason this engine cannot run ``spec`` (empty: it can)."""
    return expressible.refusals(spec, "engine:keras")


def build(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None = None) -> Any:
    """The Keras core model with ``tensors`` loaded (``threads`` sets TF's intra-op pool, if still possible)."""
    if threads is not None:
        set_threads(int(threads))
    return build_keras_model(spec, tensors, intensity_scale=None)


def run(handle: Any, x_norm: np.ndarray) -> np.ndarray:
    """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → complex64 ``[B, Cout, N, N]``."""
    return run_core(handle, x_norm)
