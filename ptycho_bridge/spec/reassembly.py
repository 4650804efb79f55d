"""numpy reference of upstream TF's reassembly stage (``ReassemblePatchesLayer`` + ``TrimReconstructionLayer``).

Why: upstream TF ``diffraction_to_obj`` does not return the per-patch object; it merges the patches
of a group on a padded canvas, divides by the translated centre mask plus ``0.001`` and crops back to
``N`` (``../shared/docs/upstream-architecture.md`` §1.5). Every other engine (torch, ONNX, our Keras core)
returns per-patch objects, so comparing them with TF goldens needs this post-processing as an
explicit, framework-free step. It is written to follow TF's float32 arithmetic step by step, so it
reproduces TF's output to float32 rounding:

1. offsets flattened batch-major (``k = b·C + c``) from the TF layout ``[B, 1, 2, C]``;
2. **batch-mean centring** over all ``B·C`` rows of the call (so one sample's result depends on the
   other samples in the batch — compare only whole batches). Upstream's SavedModel era (Keras 2,
   before the ``.keras`` layout) had no such step: ``centre=False`` reproduces it, each patch moved
   by its own offset;
3. real and imaginary parts separately: zero-pad each patch by ``(P−N)//2`` per side, translate by
   bilinear sampling at ``(x + off_x, y + off_y)`` (content moves by ``−off``), each of the four
   corners zeroed when outside the canvas (TF's XLA warp, ``fill_mode='zeros'``);
4. numerator ``S_b = Σ_c translated patch``, normaliser ``Z_b = Σ_c translated pad(M) + 0.001f``
   with ``M`` the centre mask (ones on ``[N/4, 3N/4)²``);
5. ``S_b / Z_b`` then a centre crop of ``(P−N)//2`` pixels per side.

``object_big=False`` is upstream's ``PadReconstructionLayer`` + trim: an exact identity.

Not reproduced: upstream's "batched" path, taken when ``B·C ≥ 64`` (``tf.cond`` on the number of
patches with a hard-coded batch size of 64). That path sums every patch of every sample into a
single canvas and returns one image whatever ``B`` is — batch collapse, an upstream hazard rather
than a behaviour a converter should copy. :func:`reassemble` raises on ``B·C ≥ 64`` unless asked to
ignore it (``allow_large_batch=True`` computes the per-sample result, which upstream would not).
"""

from __future__ import annotations

from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import SpecError
from ptycho_bridge.spec.network import check_padded_size

NORM_EPSILON = np.float32(0.001)
BATCH_COLLAPSE_PATCHES = 64


# -- masks and layouts -------------------------------------------------------------------------
def centre_mask(N: int) -> np.ndarray:
    """Upstream's centre mask ``M`` as float32 ``[N, N]``: ones on ``[N/4, 3N/4)²``, zeros elsewhere."""
    m = np.zeros((N, N), dtype=np.float32)
    q = N // 4
    m[q : N - q, q : N - q] = 1.0
    return m


def centre_border_masks(N: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(centre, border)`` masks ``[N, N]``; centre is ``[N/4, 3N/4)²``, border its complement.

    With ``probe.big`` the TF output's border is ``obj / 0.001`` (×1000), so errors are reported per
    region, each relative to that region's own ``max|ref|``.
    """
    centre = centre_mask(N).astype(bool)
    return centre, ~centre


def tf_positions_to_flat(positions_tf: np.ndarray) -> np.ndarray:
    """``[B, 1, 2, C]`` (TF: axis 2 = [dx, dy]) → ``[B·C, 2]`` float32, row ``k = b·C + c``."""
    p = np.asarray(positions_tf, dtype=np.float32)
    if p.ndim != 4 or p.shape[1] != 1 or p.shape[2] != 2:
        raise ValueError(f"positions must be [B, 1, 2, C] (TF layout), got {list(p.shape)}")
    return np.ascontiguousarray(p[:, 0, :, :].transpose(0, 2, 1).reshape(-1, 2))


def torch_positions_to_tf(positions_torch: np.ndarray) -> np.ndarray:
    """torch ``[B, C, 1, 2]`` → TF ``[B, 1, 2, C]`` (same numbers, [dx, dy] order kept)."""
    p = np.asarray(positions_torch, dtype=np.float32)
    if p.ndim != 4 or p.shape[2] != 1 or p.shape[3] != 2:
        raise ValueError(f"torch positions must be [B, C, 1, 2], got {list(p.shape)}")
    return np.ascontiguousarray(p.transpose(0, 2, 3, 1))


def trimmed_to_canonical(trimmed: np.ndarray) -> np.ndarray:
    """TF ``trimmed_obj`` ``[B, N, N, 1]`` → canonical ``[B, 1, N, N]``."""
    return np.ascontiguousarray(np.transpose(trimmed, (0, 3, 1, 2)))


def centre_offsets(flat: np.ndarray) -> np.ndarray:
    """Batch-mean centring as TF does it: float32 running sum over rows, divided by the row count."""
    flat = np.asarray(flat, dtype=np.float32)
    total = np.zeros(flat.shape[1:], dtype=np.float32)
    for row in flat:
        total = (total + row).astype(np.float32)
    mean = (total / np.float32(flat.shape[0])).astype(np.float32)
    return (flat - mean).astype(np.float32)


# -- translation ---------------------------------------------------------------------------------
def translate_bilinear(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``out[k, y, x] = bilinear(images[k], x + off[k,0], y + off[k,1])`` with zero fill, float32.

    Follows upstream's XLA warp: ``sx = x + dx`` in float32, ``x0 = floor(sx)``, weights
    ``wx = sx − x0``, corner weights ``(1−wx)(1−wy), wx(1−wy), (1−wx)wy, wx·wy``, each corner
    zeroed unless its integer coordinates lie in ``[0, P−1]``, summed in that order.
    """
    img = np.asarray(images, dtype=np.float32)
    off = np.asarray(offsets, dtype=np.float32)
    K, H, W = img.shape
    xs = np.arange(W, dtype=np.float32)
    ys = np.arange(H, dtype=np.float32)
    sx = (xs[None, None, :] + off[:, 0, None, None]).astype(np.float32)  # [K, 1, W]
    sy = (ys[None, :, None] + off[:, 1, None, None]).astype(np.float32)  # [K, H, 1]
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    x1 = x0 + np.float32(1.0)
    y1 = y0 + np.float32(1.0)

    def inside(v: np.ndarray, size: int) -> np.ndarray:
        return (v >= 0.0) & (v <= np.float32(size - 1))

    def clip(v: np.ndarray, size: int) -> np.ndarray:
        return np.clip(v, 0.0, size - 1).astype(np.int64)

    k = np.arange(K)[:, None, None]
    x0c, x1c, y0c, y1c = clip(x0, W), clip(x1, W), clip(y0, H), clip(y1, H)
    shape = (K, H, W)
    ia = np.where(np.broadcast_to(inside(x0, W) & inside(y0, H), shape), img[k, y0c, x0c], np.float32(0))
    ib = np.where(np.broadcast_to(inside(x1, W) & inside(y0, H), shape), img[k, y0c, x1c], np.float32(0))
    ic = np.where(np.broadcast_to(inside(x0, W) & inside(y1, H), shape), img[k, y1c, x0c], np.float32(0))
    id_ = np.where(np.broadcast_to(inside(x1, W) & inside(y1, H), shape), img[k, y1c, x1c], np.float32(0))
    wx = (sx - x0).astype(np.float32)
    wy = (sy - y0).astype(np.float32)
    one = np.float32(1.0)
    wa = (one - wx) * (one - wy)
    wb = wx * (one - wy)
    wc = (one - wx) * wy
    wd = wx * wy
    out = wa * ia + wb * ib + wc * ic + wd * id_
    return out.astype(np.float32)


# -- the stage -------------------------------------------------------------------------------------
def pad_width(N: int, padded_size: int) -> int:
    """``(padded_size − N) // 2``, the canvas border per side, after checking ``padded_size`` (ValueError)."""
    try:
        check_padded_size(N, padded_size)
    except SpecError as exc:
        raise ValueError(exc.reason) from None
    return (padded_size - N) // 2


def reassemble(
    obj: np.ndarray,
    positions_tf: np.ndarray,
    *,
    N: int,
    padded_size: int,
    object_big: bool = True,
    allow_large_batch: bool = False,
    centre: bool = True,
) -> np.ndarray:
    """TF ``trimmed_obj`` from per-patch objects: complex64 ``[B, C, N, N]`` → complex64 ``[B, N, N, 1]``.

    ``positions_tf`` is TF's ``input_positions`` ``[B, 1, 2, C]`` (ignored when not ``object_big``).
    The whole batch is one call: offsets are centred over all ``B·C`` patches, as upstream does;
    ``centre=False`` skips that step (upstream's SavedModel era: no coupling between samples).
    """
    z = np.asarray(obj)
    if z.ndim != 4 or z.shape[2] != N or z.shape[3] != N:
        raise ValueError(f"obj must be [B, C, {N}, {N}], got {list(z.shape)}")
    z = z.astype(np.complex64, copy=False)
    B, C = z.shape[:2]
    if not object_big:
        if C != 1:
            raise ValueError(f"object_big=False means one output channel, got {C}")
        # PadReconstructionLayer then TrimReconstructionLayer: the crop removes exactly the padding.
        return np.ascontiguousarray(z.transpose(0, 2, 3, 1))
    flat = tf_positions_to_flat(positions_tf)
    if flat.shape[0] != B * C:
        raise ValueError(f"positions give {flat.shape[0]} patches but obj has B·C = {B * C}")
    if B * C >= BATCH_COLLAPSE_PATCHES and not allow_large_batch:
        raise ValueError(
            f"B·C = {B * C} ≥ {BATCH_COLLAPSE_PATCHES}: upstream takes its batch-collapsing path here, "
            "which this reference does not reproduce; split the batch"
        )
    off = centre_offsets(flat) if centre else flat
    pad = pad_width(N, padded_size)
    P = N + 2 * pad
    widths = ((0, 0), (pad, pad), (pad, pad))
    patches = z.reshape(B * C, N, N)
    real = translate_bilinear(np.pad(patches.real.astype(np.float32), widths), off)
    imag = translate_bilinear(np.pad(patches.imag.astype(np.float32), widths), off)
    mask = np.broadcast_to(np.pad(centre_mask(N), widths[1:]), (B * C, P, P))
    norm = translate_bilinear(mask, off)

    def merge(t: np.ndarray) -> np.ndarray:
        t = t.reshape(B, C, P, P)
        acc = t[:, 0]
        for c in range(1, C):
            acc = (acc + t[:, c]).astype(np.float32)
        return acc

    denom = (merge(norm) + NORM_EPSILON).astype(np.float32)
    out_re = (merge(real) / denom).astype(np.float32)
    out_im = (merge(imag) / denom).astype(np.float32)
    crop = slice(pad, pad + N)
    res = np.empty((B, N, N, 1), dtype=np.complex64)  # set parts directly: no complex arithmetic rounding
    res.real[..., 0] = out_re[:, crop, crop]
    res.imag[..., 0] = out_im[:, crop, crop]
    return res


# -- comparison ------------------------------------------------------------------------------------
def _spatial_last(a: np.ndarray, layout: str) -> np.ndarray:
    """Move the two spatial axes last: ``nhwc`` ``[B,N,N,C]`` or ``nchw`` ``[B,C,N,N]`` (or ``[..., N, N]``)."""
    if layout == "auto":
        if a.ndim == 4 and a.shape[1] == a.shape[2] and a.shape[2] != a.shape[3]:
            layout = "nhwc"
        else:
            layout = "nchw"
    if layout == "nhwc":
        return np.moveaxis(a, -1, 1)
    if layout == "nchw":
        return a
    raise ValueError(f"layout must be 'nhwc', 'nchw' or 'auto', not {layout!r}")


def compare_regions(actual: np.ndarray, expected: np.ndarray, *, layout: str = "auto") -> dict[str, dict[str, Any]]:
    """Errors of ``actual`` against ``expected`` in the centre region, the border and overall.

    For each region: ``max_abs_err``; ``max_ref`` = max|expected|; ``scaled_err`` =
    ``max_abs_err / max_ref`` (what the ``1e-5·max|ref|`` tolerance is checked on); and
    ``max_rel_err`` = max over elements of ``|a−e| / |e|`` where ``|e| > 1e-6·max_ref`` (elementwise
    relative error, undefined near zeros). Arrays are ``[B, N, N, C]`` (TF) or ``[B, C, N, N]``.
    """
    a = _spatial_last(np.asarray(actual), layout)
    e = _spatial_last(np.asarray(expected), layout)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {list(a.shape)} vs {list(e.shape)}")
    N = e.shape[-1]
    if e.shape[-2] != N:
        raise ValueError(f"spatial axes must be square, got {list(e.shape[-2:])}")
    centre, border = centre_border_masks(N)
    diff = np.abs(a.astype(np.complex128) - e.astype(np.complex128))
    mag = np.abs(e.astype(np.complex128))
    out: dict[str, dict[str, Any]] = {}
    for name, region in (("centre", centre), ("border", border), ("all", np.ones_like(centre))):
        d = diff[..., region]
        m = mag[..., region]
        max_ref = float(m.max()) if m.size else 0.0
        max_abs = float(d.max()) if d.size else 0.0
        sig = m > 1e-6 * max_ref
        out[name] = {
            "max_abs_err": max_abs,
            "max_ref": max_ref,
            "scaled_err": (max_abs / max_ref) if max_ref > 0 else (0.0 if max_abs == 0 else float("inf")),
            "max_rel_err": float((d[sig] / m[sig]).max()) if sig.any() else 0.0,
        }
    return out
