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

Gridsize > 1 (:func:`window_merge`): the reference warps real part, imaginary part and centre mask of
every patch over the whole ``P x P`` padded canvas (three bilinear warps, each recomputing the same
weights and gathering through four broadcast fancy indexes), then keeps only the centre ``N x N``. Here
only that window is evaluated, the geometry (floor, weights, corner indices) is computed once per patch
and shared by the three images; a patch whose corner indices run consecutively (every patch with in-canvas
offsets) reads each corner as a plain ``N x N`` slice instead of a gather, the rest gather by index;
the images are padded by one extra zero pixel, which stands in for the reference's "corner outside the
canvas → 0"; blocks of :data:`BLOCK_PATCHES` patches keep the temporaries in the CPU cache. Every
float32 operation on every kept pixel is the reference's, in its order, so the result is bit-equal
(tests: ``array_equal`` against :func:`~ptycho_bridge.spec.reassembly.reassemble`, which stays the
oracle); non-finite offsets (never produced by the pipeline, whose coordinates are checked finite) take
the reference path.
"""

from __future__ import annotations

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.spec.reassembly import (
    NORM_EPSILON,
    centre_mask,
    centre_offsets,
    pad_width,
    reassemble,
    tf_positions_to_flat,
)

BLOCK_PATCHES = 8  # patches per block of the window merge (3 images x N² float32 each: 48 KiB at N = 64)


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
    if object_big:
        flat = tf_positions_to_flat(positions_tf)
        if flat.shape[0] == z.shape[0] * z.shape[1] and bool(np.isfinite(flat).all()):
            return window_merge(z, centre_offsets(flat) if centre else flat, N=N, pad=pad_width(N, padded_size))
    return reassemble(z, positions_tf, N=N, padded_size=padded_size, object_big=object_big,
                      allow_large_batch=True, centre=centre)


def window_merge(z: np.ndarray, off: np.ndarray, *, N: int, pad: int) -> np.ndarray:
    """The reference merge evaluated on the kept ``N x N`` window only: ``[B, C, N, N]`` + ``[B·C, 2]`` → ``[B, N, N, 1]``.

    ``off`` are the (already centred) float32 offsets ``[dx, dy]`` per patch, row ``b·C + c``.
    """
    B, C = z.shape[:2]
    K, P = B * C, N + 2 * pad
    Q = P + 2
    # real, imaginary and centre mask of every patch on the reference's padded canvas, plus one zero pixel
    # around it: index 0 and P+1 read 0 exactly where the reference zeroes a corner outside the canvas
    img = np.zeros((K, 3, Q, Q), np.float32)
    inner = slice(pad + 1, pad + 1 + N)
    zk = z.reshape(K, N, N)
    img[:, 0, inner, inner] = zk.real
    img[:, 1, inner, inner] = zk.imag
    img[:, 2, inner, inner] = centre_mask(N)
    win = np.arange(pad, pad + N, dtype=np.float32)  # the canvas coordinates the crop keeps
    off = np.asarray(off, dtype=np.float32)
    sx = (win[None, :] + off[:, 0, None]).astype(np.float32)  # [K, N] (columns)
    sy = (win[None, :] + off[:, 1, None]).astype(np.float32)  # [K, N] (rows)
    x0, y0 = np.floor(sx), np.floor(sy)
    one = np.float32(1.0)
    wx, wy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    ux, uy = one - wx, one - wy

    def index(v: np.ndarray) -> np.ndarray:  # canvas coordinate -> padded index (outside -> a zero pixel)
        return (np.clip(v, -1.0, float(P)) + 1).astype(np.intp)

    rows, cols = (index(y0), index(y0 + one)), (index(x0), index(x0 + one))  # each [K, N]
    # a patch whose four index runs are consecutive reads each corner as a plain N x N slice (no gather)
    steps = np.stack([np.diff(v, axis=1) for v in (*rows, *cols)])
    regular = np.all(steps == 1, axis=(0, 2))

    def corner(k: int, r: np.ndarray, c: np.ndarray) -> np.ndarray:  # [3, N, N] of patch k
        if regular[k]:
            return img[k, :, r[k, 0]:r[k, 0] + N, c[k, 0]:c[k, 0] + N]
        return img[k][:, r[k][:, None], c[k][None, :]]

    acc = np.empty((B, 3, N, N), np.float32)
    step = max(1, BLOCK_PATCHES // C)  # groups per block: the temporaries stay in the CPU cache
    for g0 in range(0, B, step):
        g1 = min(B, g0 + step)
        ks = range(g0 * C, g1 * C)
        k = slice(g0 * C, g1 * C)

        def gathered(r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return np.stack([corner(i, r, c) for i in ks])  # [n, 3, N, N]

        # ((wa·ia + wb·ib) + wc·ic) + wd·id, each step float32, as the reference evaluates it; the weights
        # are the reference's (1-wx)(1-wy), wx(1-wy), (1-wx)wy, wx·wy, broadcast over the three images
        warped = (ux[k, None, :] * uy[k, :, None])[:, None] * gathered(rows[0], cols[0])
        warped += (wx[k, None, :] * uy[k, :, None])[:, None] * gathered(rows[0], cols[1])
        warped += (ux[k, None, :] * wy[k, :, None])[:, None] * gathered(rows[1], cols[0])
        warped += (wx[k, None, :] * wy[k, :, None])[:, None] * gathered(rows[1], cols[1])
        per = warped.reshape(g1 - g0, C, 3, N, N)
        total = per[:, 0].copy()
        for c in range(1, C):  # Σ_c in channel order, float32
            total += per[:, c]
        acc[g0:g1] = total
    denom = (acc[:, 2] + NORM_EPSILON).astype(np.float32)
    res = np.empty((B, N, N, 1), np.complex64)
    res.real[..., 0] = (acc[:, 0] / denom).astype(np.float32)
    res.imag[..., 0] = (acc[:, 1] / denom).astype(np.float32)
    return res
