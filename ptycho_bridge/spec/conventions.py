"""Input and output conventions, in one place (../shared/docs/design.md §4).

Why: TF divides its input by ``exp(f32(ln s))`` *inside* the graph; torch multiplies by a runtime
``input_scale_factor``; layouts differ (NHWC vs NCHW). Every engine in ``converters/`` takes the
**canonical network input**: the normalised amplitude ``x_norm`` as float32 ``[B, C, N, N]`` — what
the first convolution sees — and returns the per-patch complex object ``[B, Cout, N, N]`` complex64.
The functions here map a caller's data (and the fixtures' golden inputs) onto that convention.

- TF archives / TF goldens: ``x_norm = input_nhwc / exp(float32(ln s))`` computed in float32 exactly
  as upstream's ``IntensityScaler`` does, then NHWC → NCHW.
- torch archives / torch goldens: ``x_norm = input · input_scale_factor`` (float32), upstream's
  ``IntensityScalerModule.scale`` with ``intensity_scale_trainable=False``.
"""

from __future__ import annotations

import math
from typing import Mapping

from ptycho_bridge.lazy import numpy as np


def tf_log_scale(intensity_scale: float) -> np.float32:
    """The float32 value upstream stores in its ``log_scale`` variable."""
    return np.float32(math.log(float(intensity_scale)))


def tf_scale_divisor(intensity_scale: float) -> np.float32:
    """``exp(log_scale)`` evaluated in float32, the divisor TF's ``IntensityScaler`` applies."""
    return np.exp(tf_log_scale(intensity_scale), dtype=np.float32)


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def tf_input_to_canonical(input_nhwc: np.ndarray, intensity_scale: float) -> np.ndarray:
    """TF ``diffraction_to_obj`` input (``X·s``, NHWC) → canonical ``x_norm`` (NCHW)."""
    x = np.asarray(input_nhwc, dtype=np.float32) / tf_scale_divisor(intensity_scale)
    return nhwc_to_nchw(x.astype(np.float32, copy=False))


def torch_input_to_canonical(input_nchw: np.ndarray, input_scale_factor: np.ndarray | float) -> np.ndarray:
    """torch ``forward_predict`` input and ``input_scale_factor`` → canonical ``x_norm``."""
    x = np.asarray(input_nchw, dtype=np.float32) * np.asarray(input_scale_factor, dtype=np.float32)
    return np.ascontiguousarray(x.astype(np.float32, copy=False))


def normalisation_scale(amplitude_nchw: np.ndarray) -> np.ndarray:
    """Upstream inference's per-batch normalisation ``sqrt((N/2)² / mean_b Σ x²)`` as ``[B,1,1,1]``."""
    x = np.asarray(amplitude_nchw, dtype=np.float32)
    n = x.shape[-1]
    mean_energy = np.mean(np.sum(x.astype(np.float64) ** 2, axis=(-2, -1)))
    scale = np.float32(math.sqrt((n / 2) ** 2 / mean_energy)) if mean_energy > 0 else np.float32(1.0)
    return np.full((x.shape[0], 1, 1, 1), scale, dtype=np.float32)


def golden_canonical_input(golden: Mapping[str, np.ndarray], backend: str, intensity_scale: float | None) -> np.ndarray:
    """The canonical input that corresponds to a fixture's ``golden.npz`` (either backend)."""
    if backend in ("tensorflow", "tf"):
        scale = float(golden["intensity_scale"]) if intensity_scale is None else intensity_scale
        return tf_input_to_canonical(golden["input"], scale)
    if backend in ("pytorch", "torch"):
        return torch_input_to_canonical(golden["input"], golden["input_scale_factor"])
    raise ValueError(f"unknown backend {backend!r}")


def ri_to_complex(x: np.ndarray) -> np.ndarray:
    """float32 ``[..., 2]`` → complex64 ``[...]``."""
    return (x[..., 0] + 1j * x[..., 1]).astype(np.complex64)
