"""The per-group merge: a network's C patches of one group onto one ``N x N`` object patch.

Why here and not in the engines: upstream TF's ``diffraction_to_obj`` ends with its reassembly
stage (``ReassemblePatchesLayer`` + ``TrimReconstructionLayer``); our engines return per-patch
objects, so :func:`ptycho_bridge.spec.reassembly.reassemble` applies that stage as a separate,
framework-free step, for TF and PyTorch archives alike (the TF path's semantics for both).

Two upstream details decide the call pattern:

- **centring**: the ``.keras``-era layer centres the local offsets on their mean over the whole
  predict call (upstream's Keras ``predict`` batch: 32 groups); the SavedModel era did not centre
  (``ModelEntry.reassembly_centring`` False). The pipeline therefore calls :func:`group_merge` on
  chunks of ``centring_batch`` groups aligned on multiples of 32.
- **batch collapse**: upstream's batched branch (B·C >= 64 in a call) returns ONE canvas for the whole
  call. It is never reproduced (``allow_large_batch=True`` keeps every group's own result).

Gridsize-1 fast path: with C = 1 and every local offset exactly 0 (upstream's gs1 offsets are
``-(x - x)``), the translation is the identity (bilinear weights 1, 0, 0, 0) and the merge reduces to
``patch / (centre_mask + 0.001)`` in float32 — the same float32 operations on the same values, so
the result is identical (tests check ``array_equal`` against the reference). Non-finite patches take
the reference path (there ``0·inf`` spreads NaN to neighbours).
"""

from __future__ import annotations

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.spec.reassembly import NORM_EPSILON, centre_mask, reassemble


def is_identity_merge(obj: np.ndarray, positions_tf: np.ndarray) -> bool:
    """True when the reference merge is exactly ``patch / (mask + eps)``: one channel, zero offsets, finite."""
    return obj.shape[1] == 1 and not np.any(positions_tf) and bool(np.isfinite(obj.view(np.float32)).all())


def group_merge(obj: np.ndarray, positions_tf: np.ndarray, *, N: int, padded_size: int, object_big: bool,
                centre: bool) -> np.ndarray:
    """complex64 ``[B, C, N, N]`` + local offsets ``[B, 1, 2, C]`` → TF ``trimmed_obj`` ``[B, N, N, 1]``.

    Every group keeps its own result; offsets are centred over the call's ``B·C`` rows when ``centre``.
    """
    z = np.ascontiguousarray(obj, dtype=np.complex64)
    if object_big and is_identity_merge(z, positions_tf):
        denom = (centre_mask(N) + NORM_EPSILON).astype(np.float32)
        out = np.empty((z.shape[0], N, N, 1), np.complex64)
        out.real[..., 0] = (z.real[:, 0] / denom).astype(np.float32)
        out.imag[..., 0] = (z.imag[:, 0] / denom).astype(np.float32)
        return out
    return reassemble(z, positions_tf, N=N, padded_size=padded_size, object_big=object_big,
                      allow_large_batch=True, centre=centre)
