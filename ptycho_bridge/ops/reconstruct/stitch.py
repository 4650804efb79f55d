"""``tf_helper.reassemble_position(obj, global_offsets, M)`` as a streaming accumulator (numpy only).

Upstream semantics (verified against the goldens, see ``docs/upstream-inference.md`` §A.7/§E):

1. crop: ``obj[:, N//2 - M//2 : N//2 + M//2]`` on both axes (M=20 for N=64: rows/cols 22..41, inside
   the N/4..3N/4 centre, so the TF model's x1000 border never reaches the canvas). Only even M makes
   sense: for odd M upstream's canvas (M + 2·pad) and padded crops (M-1 + 2·pad) disagree.
2. ``com`` = float32 mean of the float32 offsets, summed **sequentially** in patch order
   (``cumsum(float32)[-1] / float32(B)``); ``adj = float32(off) - com`` in float32, (B, 2) = [dx, dy].
3. ``pad = ceil(max |adj|)`` over both axes, +1 if odd; canvas ``P = M + 2·pad`` (depends only on the
   extent of the offsets, so it is known before the first patch).
4. each crop zero-padded by ``pad`` per side, then bilinear translation (content moves by **+adj**):
   ``out[r, c]`` samples the padded crop at ``(sx, sy) = (float32(c) - dx, float32(r) - dy)``, ``x0 =
   floor(sx)``, ``wx = sx - x0`` (float32), corner weights ``(1-wx)(1-wy), wx(1-wy), (1-wx)wy, wx·wy``;
   a corner outside the padded image contributes 0 (no renormalisation). Real part, imaginary part and
   the ones image use the same weights.
5. result ``S / (1e-9 + count)``; uncovered pixels are 0. Patch pixel (N/2+dr, N/2+dc) lands at canvas
   (P/2 + dy + dr, P/2 + dx + dc) with ``dx = x - com_x`` — x moves columns, y moves rows.

Streaming: each translated crop is non-zero only on an ``(M+3)``-wide window around its position, so
``add`` evaluates the exact same float32 sample positions on that window only and adds it into the
numerator (real, imag) and count canvases. Memory: 3 float32 canvases (12 bytes/px) plus the complex64
result (8 bytes/px) at the end; the canvas side is checked against ``max_canvas`` before allocating.
Accumulation order differs from TF's chunked sums; that is at float32-rounding level (~1e-7 relative).

Window form (issue 21): a block of groups is stitched into a :class:`CanvasWindow` (the rectangle its
patches touch, :func:`window_bounds`); windows are summed along one fixed binary tree over the block index
(:func:`tree_split`, :class:`TreeReducer`, :func:`add_windows`) and divided once (:func:`finalise`). The
pipeline always goes this way, in one process or on a Dask cluster, so the float32 additions happen in the
same order whatever runs them. Memory: the partial windows held by the reducer (about one canvas for a
raster scan) plus the complex64 result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import FormatError, OptionError

DEFAULT_MAX_CANVAS = 32768
COORD_FIELD = "xcoords/ycoords"
EPS = np.float32(1e-9)


@dataclass(frozen=True)
class CanvasPlan:
    """Where the canvas is: centre of mass, padding, side and crop size."""

    com: np.ndarray  # float32 (2,) [x, y]
    pad: int
    size: int  # P = M + 2 * pad
    crop: int  # M
    count: int  # number of offsets planned


def flat_offsets(offsets: np.ndarray) -> np.ndarray:
    """Global offsets as float64 ``(B, 2)`` [x, y] from ``(B, 2)`` or TF's ``(B, 1, 2, 1)``."""
    a = np.asarray(offsets, dtype=np.float64)
    if a.ndim == 4 and a.shape[1:] == (1, 2, 1):
        a = a[:, 0, :, 0]
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"global offsets must be (B, 2) or (B, 1, 2, 1), got {a.shape}")
    return a


def plan_canvas(offsets: np.ndarray, crop: int = 20, max_canvas: int = DEFAULT_MAX_CANVAS) -> CanvasPlan:
    """Upstream's canvas for these offsets (all of them, in patch order); checks ``max_canvas``."""
    if crop < 2 or crop % 2:
        raise OptionError(f"M must be an even integer >= 2, got {crop}", option="--crop")
    off = flat_offsets(offsets)
    if off.shape[0] == 0:
        raise ValueError("global offsets: no patches to stitch")
    if not np.all(np.isfinite(off)):
        raise FormatError("non-finite global offsets", field=COORD_FIELD)
    off32 = off.astype(np.float32)
    com = (np.cumsum(off32, axis=0, dtype=np.float32)[-1] / np.float32(off32.shape[0])).astype(np.float32)
    adj = (off32 - com).astype(np.float32)
    max_adj = float(np.max(np.abs(adj)))
    if not max_adj < 2 * max_canvas:
        raise FormatError(f"the scan positions span {2 * max_adj:.0f} px, so the canvas would exceed "
                          f"--max-canvas {max_canvas} px a side", field=COORD_FIELD)
    pad = int(math.ceil(np.float32(max_adj)))
    pad += pad % 2
    size = crop + 2 * pad
    if size > max_canvas:
        raise FormatError(f"the scan positions need a {size}x{size} px canvas ({20 * size * size / 2**30:.1f} GiB "
                          f"while stitching), over --max-canvas {max_canvas} px a side", field=COORD_FIELD)
    return CanvasPlan(com=com, pad=pad, size=size, crop=crop, count=int(off32.shape[0]))


def _planned_adj(plan: CanvasPlan, off: np.ndarray) -> np.ndarray:
    """float32 ``adj = off - com`` of float64 offsets ``(k, 2)``; refuses offsets the plan did not cover."""
    adj = (off.astype(np.float32) - plan.com).astype(np.float32)
    if adj.size and float(np.max(np.abs(adj))) > plan.pad:
        raise ValueError("offsets fall outside the planned canvas (plan the canvas from all offsets)")
    return adj


def _window_start(pos: np.ndarray, pad: int, P: int, W: int) -> np.ndarray:
    """Per patch: the first canvas index of its ``W``-wide window along one axis (``pos`` = float32 adj)."""
    return np.clip(np.floor(pos + np.float32(pad)).astype(np.int64) - 1, 0, P - W)


def _axis_samples(pos: np.ndarray, pad: int, M: int, P: int, W: int):  # type: ignore[no-untyped-def]
    """Per patch: window start, float32 weight of the upper corner, crop indices of both corners, validity."""
    start = _window_start(pos, pad, P, W)
    grid = start[:, None] + np.arange(W)[None, :]  # canvas indices (K, W)
    s = (grid.astype(np.float32) - pos[:, None]).astype(np.float32)  # sample positions in padded coords
    f = np.floor(s)
    w = (s - f).astype(np.float32)
    i0 = f.astype(np.int64) - pad  # crop index of the lower corner
    i1 = i0 + 1
    v0, v1 = (i0 >= 0) & (i0 < M), (i1 >= 0) & (i1 < M)
    return start, w, np.clip(i0, 0, M - 1), np.clip(i1, 0, M - 1), v0, v1


@dataclass
class CanvasWindow:
    """A rectangle of the canvas with its partial sums: what one block task returns (issue 21).

    ``num_re``/``num_im``/``count`` are float32 ``(h, w)`` at canvas rows ``r0:r0+h``, cols ``c0:c0+w``;
    ``groups`` counts the patches added. Windows are summed by :func:`add_windows` (exact placement into
    the union rectangle, then one float32 addition per overlapping pixel) and finalised once.
    """

    r0: int
    c0: int
    num_re: np.ndarray
    num_im: np.ndarray
    count: np.ndarray
    groups: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.count.shape[0]), int(self.count.shape[1]))


def window_bounds(plan: CanvasPlan, offsets: np.ndarray) -> tuple[int, int, int, int]:
    """Canvas rows ``r0:r1`` and cols ``c0:c1`` that patches at ``offsets`` can touch (their ``W``-wide windows)."""
    off = flat_offsets(offsets)
    P, W = plan.size, min(plan.crop + 3, plan.size)
    adj = _planned_adj(plan, off)
    starts = [_window_start(adj[:, a], plan.pad, P, W) for a in (1, 0)]
    return (int(starts[0].min()), int(starts[0].max()) + W, int(starts[1].min()), int(starts[1].max()) + W)


class Stitcher:
    """Streaming ``reassemble_position``: ``add(patches, offsets)`` any number of times, then ``result()``.

    ``bounds=(r0, r1, c0, c1)`` keeps only that rectangle of the canvas (:func:`window_bounds` of every
    offset that will be added): the window form a block task uses; :meth:`window` hands it out.
    """

    def __init__(self, plan: CanvasPlan, N: int, accumulate: type = np.float32,
                 bounds: tuple[int, int, int, int] | None = None) -> None:
        if plan.crop > N:
            raise OptionError(f"M={plan.crop} is larger than the patch size N={N}", option="--crop")
        self.plan, self.N = plan, int(N)
        P = plan.size
        self.W = min(plan.crop + 3, P)
        r0, r1, c0, c1 = bounds if bounds is not None else (0, P, 0, P)
        if not (0 <= r0 < r1 <= P and 0 <= c0 < c1 <= P):
            raise ValueError(f"window {bounds} is not inside the {P}x{P} canvas")
        self.r0, self.c0 = r0, c0
        self.num_re: np.ndarray = np.zeros((r1 - r0, c1 - c0), accumulate)
        self.num_im: np.ndarray = np.zeros((r1 - r0, c1 - c0), accumulate)
        self.count: np.ndarray = np.zeros((r1 - r0, c1 - c0), accumulate)
        self.added = 0

    def add(self, patches: np.ndarray, offsets: np.ndarray) -> None:
        """Add complex patches ``(k, N, N)`` / ``(k, N, N, 1)`` at global offsets ``(k, 2)`` / ``(k, 1, 2, 1)``."""
        z = np.asarray(patches)
        if z.ndim == 4 and z.shape[-1] == 1:
            z = z[..., 0]
        N, M, pl = self.N, self.plan.crop, self.plan
        if z.ndim != 3 or z.shape[1:] != (N, N):
            raise ValueError(f"patches must be (k, {N}, {N}) or (k, {N}, {N}, 1), got {np.shape(patches)}")
        off = flat_offsets(offsets)
        if off.shape[0] != z.shape[0]:
            raise ValueError(f"{z.shape[0]} patches but {off.shape[0]} offsets")
        adj = _planned_adj(pl, off)
        lo = N // 2 - M // 2
        crop = z[:, lo:lo + M, lo:lo + M].astype(np.complex64)
        re, im = np.ascontiguousarray(crop.real), np.ascontiguousarray(crop.imag)
        P, W = pl.size, self.W
        c0, wx, x0, x1, vx0, vx1 = _axis_samples(adj[:, 0], pl.pad, M, P, W)
        r0, wy, y0, y1, vy0, vy1 = _axis_samples(adj[:, 1], pl.pad, M, P, W)
        h, w_ = self.count.shape
        if z.shape[0] and (r0.min() < self.r0 or c0.min() < self.c0 or r0.max() + W > self.r0 + h
                           or c0.max() + W > self.c0 + w_):
            raise ValueError("patches fall outside this stitcher's window (see window_bounds)")
        r0, c0 = r0 - self.r0, c0 - self.c0
        one = np.float32(1.0)
        wx_, wy_ = wx[:, None, :], wy[:, :, None]
        wa, wb = (one - wx_) * (one - wy_), wx_ * (one - wy_)
        wc, wd = (one - wx_) * wy_, wx_ * wy_
        k = np.arange(z.shape[0])[:, None, None]
        corners = ((y0, x0, vy0, vx0, wa), (y0, x1, vy0, vx1, wb), (y1, x0, vy1, vx0, wc), (y1, x1, vy1, vx1, wd))
        acc_re = acc_im = acc_n = None
        for yi, xi, vy, vx, w in corners:
            valid = vy[:, :, None] & vx[:, None, :]
            zero = np.float32(0)
            t_re = w * np.where(valid, re[k, yi[:, :, None], xi[:, None, :]], zero)
            t_im = w * np.where(valid, im[k, yi[:, :, None], xi[:, None, :]], zero)
            t_n = w * valid.astype(np.float32)
            acc_re = t_re if acc_re is None else acc_re + t_re
            acc_im = t_im if acc_im is None else acc_im + t_im
            acc_n = t_n if acc_n is None else acc_n + t_n
        for i in range(z.shape[0]):
            rs, cs = slice(r0[i], r0[i] + W), slice(c0[i], c0[i] + W)
            self.num_re[rs, cs] += acc_re[i]
            self.num_im[rs, cs] += acc_im[i]
            self.count[rs, cs] += acc_n[i]
        self.added += z.shape[0]

    def window(self) -> CanvasWindow:
        """The partial sums as a :class:`CanvasWindow` (the arrays are handed over, not copied)."""
        return CanvasWindow(self.r0, self.c0, self.num_re, self.num_im, self.count, self.added)

    def result(self, rows_per_block: int = 1024) -> np.ndarray:
        """``S / (1e-9 + count)`` as complex64 ``(P, P)`` (:func:`finalise`); pixels uncovered or outside the
        window are 0."""
        return finalise(self.plan, self.window(), rows_per_block)


def add_windows(a: CanvasWindow, b: CanvasWindow) -> CanvasWindow:
    """``a + b`` on the union rectangle: each placed exactly (``0 + x == x``), then one float32 add per overlap.

    Commutative bit for bit (IEEE addition is), so only the *tree* of additions decides the result.
    """
    r0, c0 = min(a.r0, b.r0), min(a.c0, b.c0)
    r1 = max(a.r0 + a.shape[0], b.r0 + b.shape[0])
    c1 = max(a.c0 + a.shape[1], b.c0 + b.shape[1])
    h, w = r1 - r0, c1 - c0
    out = CanvasWindow(r0, c0, np.zeros((h, w), np.float32), np.zeros((h, w), np.float32),
                       np.zeros((h, w), np.float32), a.groups + b.groups)
    for part in (a, b):
        rs = slice(part.r0 - r0, part.r0 - r0 + part.shape[0])
        cs = slice(part.c0 - c0, part.c0 - c0 + part.shape[1])
        out.num_re[rs, cs] += part.num_re
        out.num_im[rs, cs] += part.num_im
        out.count[rs, cs] += part.count
    return out


def tree_split(n: int) -> int:
    """Where the fixed reduction tree splits ``n >= 2`` leaves: the largest power of two below ``n``."""
    return 1 << ((n - 1).bit_length() - 1)


class TreeReducer:
    """Sums windows pushed in block order along the fixed tree of :func:`tree_split`, holding O(log n) of them.

    A binary counter: two partial sums of equal leaf count merge at once; :meth:`result` merges what is left
    from the right. The tree is the one :func:`tree_split` defines, so a reduction scheduled elsewhere in the
    same shape (the Dask driver) adds the same numbers in the same order: same bits.
    """

    def __init__(self) -> None:
        self.stack: list[tuple[int, CanvasWindow]] = []  # (leaves, partial sum)

    def push(self, window: CanvasWindow) -> None:
        leaves, w = 1, window
        while self.stack and self.stack[-1][0] == leaves:
            n, prev = self.stack.pop()
            leaves, w = n + leaves, add_windows(prev, w)
        self.stack.append((leaves, w))

    def result(self) -> CanvasWindow:
        if not self.stack:
            raise ValueError("no windows to reduce")
        leaves, w = self.stack.pop()
        while self.stack:
            n, prev = self.stack.pop()
            leaves, w = n + leaves, add_windows(prev, w)
        return w


def finalise(plan: CanvasPlan, window: CanvasWindow, rows_per_block: int = 1024) -> np.ndarray:
    """The complex64 ``(P, P)`` object from the reduced window: ``S / (1e-9 + count)``, 0 outside it."""
    P = plan.size
    out = np.zeros((P, P), np.complex64)
    h, w = window.shape
    for r in range(0, h, rows_per_block):
        sl = slice(r, r + rows_per_block)
        den = (window.count[sl].astype(np.float32) + EPS).astype(np.float32)
        rows, cols = slice(window.r0 + r, window.r0 + min(h, r + rows_per_block)), slice(window.c0, window.c0 + w)
        out.real[rows, cols] = window.num_re[sl].astype(np.float32) / den
        out.imag[rows, cols] = window.num_im[sl].astype(np.float32) / den
    return out


def reassemble_position(patches: np.ndarray, offsets: np.ndarray, crop: int = 20, chunk: int = 256,
                        max_canvas: int = DEFAULT_MAX_CANVAS) -> np.ndarray:
    """One-shot convenience: plan from all offsets, add in chunks, return complex64 ``(P, P)``."""
    z = np.asarray(patches)
    off = flat_offsets(offsets)
    st = Stitcher(plan_canvas(off, crop, max_canvas), z.shape[1])
    for s in range(0, z.shape[0], chunk):
        st.add(z[s:s + chunk], off[s:s + chunk])
    return st.result()
