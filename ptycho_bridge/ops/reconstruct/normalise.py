"""Upstream's normalisation of grouped patterns, computed streaming, and the model input per backend.

Upstream (``raw_data.normalize_data``) on the grouped stack ``diffraction (B,N,N,C)``:

    s = float32( sqrt( (N/2)**2 / mean( sum_{h,w} float64(diffraction)**2 ) ) )     # mean over all B*C
    X_full = s * float32(diffraction)                                                # float32

The mean runs over the *grouped* patterns: a pattern used by several groups counts several times, and
patterns no group uses do not count, so ``s`` depends on the grouping, not only on the file.

Streaming: ``s`` is a global statistic and the network is nonlinear, so it must be known before the
first model call. That makes **two passes** over the patterns: pass 1 (:func:`pattern_energies`)
reads every *distinct* grouped pattern once, in file order and in chunks, keeping one float64 energy
per pattern (8 bytes each) and checking finiteness; ``s`` is then the mean of those energies gathered
by the group indices (duplicates counted, same ``np.mean`` over a ``(B, C)`` float64 array as
upstream). Pass 2 (the pipeline) reads the patterns again group-chunk by group-chunk.

Model input (canonical ``x_norm`` float32 ``[B, C, N, N]``, what the first convolution sees):

- TF archive: upstream feeds ``X_full * intensity_scale`` (float32) and the graph's ``IntensityScaler``
  divides by ``exp(float32(log(intensity_scale)))`` in float32: ``x_norm = (X_full*s_a) / exp(f32(ln s_a))``
  (~X_full, not exactly).
- torch archive (fixture recipe): ``forward_predict(x = X_full * float32(s_t), input_scale_factor =
  float32(1/s_t))`` with ``s_t`` the torch params.dill intensity scale; the module multiplies:
  ``x_norm = (X_full * f32(s_t)) * f32(1/s_t)``.
"""

from __future__ import annotations

from typing import Callable

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import FormatError
from ptycho_bridge.ops.reconstruct.patterns import PatternSource
from ptycho_bridge.spec.conventions import tf_scale_divisor, torch_input_to_canonical


def pattern_energies(source: PatternSource, indices: np.ndarray, *, chunk: int = 1024,
                     key: str = "diffraction", progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Pass 1: ``sum(float64(p)**2)`` of each distinct pattern in ``indices`` (returned in sorted-unique order).

    Raises :class:`FormatError` naming ``key`` and the first pattern index holding a non-finite value.
    """
    uniq = np.unique(np.asarray(indices, dtype=np.int64))
    out = np.empty(uniq.size, dtype=np.float64)
    for start in range(0, uniq.size, chunk):
        sel = uniq[start:start + chunk]
        p = source.take(sel)
        with np.errstate(all="ignore"):  # signalling NaNs and overflows are found just below, as one error
            e = np.sum(np.square(p.astype(np.float64)), axis=(1, 2))
        bad = ~np.isfinite(e)
        if bad.any():  # how many and where: the first bad pattern, its first bad pixel, the count in this chunk
            i = int(np.argmax(bad))
            pix = ~np.isfinite(p[i])
            r, c = divmod(int(np.argmax(pix)), p.shape[2])
            raise FormatError(f"pattern {int(sel[i])} contains non-finite values ({int(pix.sum())} in it, first at "
                              f"pixel ({r}, {c}); {int(np.count_nonzero(~np.isfinite(p)))} in patterns "
                              f"{int(sel[0])}..{int(sel[-1])} read so far)", field=key)
        out[start:start + sel.size] = e
        if progress is not None:
            progress(min(start + chunk, uniq.size), uniq.size)
    return out


def grouped_energies(energies_sorted: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Energies gathered to the ``(B, C)`` group layout (duplicates counted)."""
    uniq = np.unique(groups)
    pos = np.searchsorted(uniq, groups)
    return energies_sorted[pos]


def norm_scale(energies_bc: np.ndarray, N: int) -> np.float32:
    """``float32(sqrt((N/2)^2 / mean(E)))`` over the grouped energies; refuses an all-zero input."""
    mean = np.mean(energies_bc)
    if not mean > 0:
        raise FormatError("the grouped patterns are all zero; the normalisation is undefined", field="diffraction")
    return np.float32(np.sqrt(((N / 2) ** 2) / mean))


def x_full(patterns: np.ndarray, s: np.float32) -> np.ndarray:
    """``X_full = s * float32(patterns)`` (float32)."""
    return (np.float32(s) * np.asarray(patterns, dtype=np.float32)).astype(np.float32, copy=False)


def model_input(xf_nchw: np.ndarray, backend: str, intensity_scale: float) -> np.ndarray:
    """Canonical ``x_norm`` from ``X_full`` (NCHW float32) for a TF or torch archive."""
    fed = fed_input(xf_nchw, intensity_scale)
    if backend == "tensorflow":  # the graph's IntensityScaler (conventions.tf_input_to_canonical, elementwise)
        return (fed / tf_scale_divisor(intensity_scale)).astype(np.float32, copy=False)
    if backend == "pytorch":  # forward_predict(x, input_scale_factor=f32(1/s)) as the fixture recipe calls it
        return torch_input_to_canonical(fed, torch_input_scale_factor(intensity_scale))
    raise FormatError(f"expected 'tensorflow' or 'pytorch', got {backend!r}", field="backend")


def fed_input(xf_nchw: np.ndarray, intensity_scale: float) -> np.ndarray:
    """What upstream feeds the model: ``X_full * intensity_scale`` in float32 (layout unchanged)."""
    return (np.asarray(xf_nchw, dtype=np.float32) * np.float32(intensity_scale)).astype(np.float32, copy=False)


def torch_input_scale_factor(intensity_scale: float) -> np.float32:
    """``float32(1 / s)`` — what the torch fixture recipe passes as ``input_scale_factor``."""
    return np.float32(1.0 / float(intensity_scale))
