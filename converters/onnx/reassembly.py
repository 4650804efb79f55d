"""TF's reassembly stage (``ReassemblePatchesLayer`` per-sample path + ``TrimReconstructionLayer``) as ONNX ops.

Why it lives apart from the network: it is optional (``export-onnx --reassembly``), TF-specific,
and the one part of the graph that reproduces upstream's numerics rather than a network layer: a
bilinear zero-fill translation written as one-hot matrix products so that it is exact. It consumes
the network's ``object`` output and the ``positions`` input and emits ``trimmed_object``
(names from :mod:`converters.onnx.layout`); the numpy reference is :mod:`ptycho_bridge.spec.reassembly`.
"""

from __future__ import annotations

from ptycho_bridge.lazy import numpy as np

from converters.onnx.graph import GraphBuilder
from converters.onnx.layout import TRIMMED_NAME
from ptycho_bridge.spec.network import NetworkSpec
from ptycho_bridge.spec.reassembly import NORM_EPSILON, centre_mask


def emit_reassembly(g: GraphBuilder, spec: NetworkSpec, obj_ri: str, positions: str, padded_size: int,
                    centre: bool = True) -> str:
    """TF ReassemblePatchesLayer (per-sample path) + TrimReconstructionLayer, op for op.

    Per patch ``k = b·C + c`` with offsets centred by the mean over the whole batch: zero-pad to
    ``P``, sample bilinearly at ``(x + off_x, y + off_y)`` with zero fill, each of the four corners
    masked separately (``projective_warp_xla``), sum over the group, divide by the same translation
    of the centre mask ``M`` summed + 0.001, crop the centre ``N × N``. The gathers are one-hot
    matrix products (exact: products with 0/1 and sums with zeros), and the four bilinear terms are
    weighted and summed in TF's order ``wa·Ia + wb·Ib + wc·Ic + wd·Id``. (One difference remains by
    construction: a non-finite value in a patch spreads along its row/column of the product, where
    TF's gather would keep it local; network outputs are finite.) ``B·C >= 64`` (TF's
    batch-collapsing path) is not reproduced: :func:`converters.onnx.engine.run_session` refuses such
    batches. ``centre=False`` leaves the offsets as given (upstream's SavedModel era had no centring).
    Returns the name of the ``trimmed_object`` output.
    """
    N = spec.N
    half = (padded_size - N) // 2
    P = N + 2 * half  # ZeroPadding2D((P−N)//2) → canvas actually used by TF
    if not spec.object_big:
        # PadReconstructionLayer then trim: trimmed_obj == obj exactly; positions unused.
        t = g.op("Transpose", [obj_ri], "reassembly.to_nhwc", perm=[0, 2, 3, 1, 4])
        return g.op("Identity", [t], TRIMMED_NAME)

    # offsets [B, C] (x = column, y = row), centred over all B·C patches
    def axis_offsets(index: int, tag: str) -> str:
        sel = g.op("Gather", [positions, g.const(index, np.int64, "gather_idx")], f"reassembly.off_{tag}_raw", axis=2)
        off = g.squeeze(sel, [1], f"reassembly.off_{tag}")  # [B, C]
        if not centre:
            return off
        mean = g.reduce("ReduceMean", off, [0, 1], f"reassembly.off_{tag}_mean")
        return g.op("Sub", [off, mean], f"reassembly.off_{tag}_centred")

    grid = g.const(np.arange(P, dtype=np.float32), name="reassembly.grid")

    def axis_terms(off: str, tag: str) -> tuple[str, str, str]:
        """Coordinates s = i + off, weight s − floor(s), and the sample positions floor(s), +1."""
        s = g.op("Add", [g.unsqueeze(off, [-1], f"reassembly.off_{tag}_col"), grid], f"reassembly.s{tag}")
        i0 = g.op("Floor", [s], f"reassembly.{tag}0")
        w = g.op("Sub", [s, i0], f"reassembly.w{tag}")  # [B, C, P]
        i1 = g.op("Add", [i0, g.const(np.float32(1.0), name="one")], f"reassembly.{tag}1")
        return w, i0, i1

    def selector(idx: str, tag: str, transpose: bool) -> str:
        """One-hot [B, C, P, P]: row = output pixel, column = source pixel (or transposed).

        Out-of-range sample positions match no column, so their row is all zeros: TF's zero fill.
        """
        if transpose:  # S[b, c, src, out] = (src == idx[b, c, out])
            lhs = g.unsqueeze(idx, [2], f"reassembly.sel_{tag}_idx")  # [B, C, 1, P]
            rhs = g.const(np.arange(P, dtype=np.float32)[:, None], name="reassembly.grid_col")
        else:  # S[b, c, out, src] = (src == idx[b, c, out])
            lhs = g.unsqueeze(idx, [3], f"reassembly.sel_{tag}_idx")  # [B, C, P, 1]
            rhs = grid
        eq = g.op("Equal", [lhs, rhs], f"reassembly.sel_{tag}_eq")
        return g.op("Cast", [eq], f"reassembly.sel_{tag}", to=1)

    ox = axis_offsets(0, "x")
    oy = axis_offsets(1, "y")
    wx, x0, x1 = axis_terms(ox, "x")
    wy, y0, y1 = axis_terms(oy, "y")
    sy0, sy1 = selector(y0, "y0", False), selector(y1, "y1", False)
    sx0t, sx1t = selector(x0, "x0", True), selector(x1, "x1", True)

    # bilinear weights per output pixel, exactly as projective_warp_xla forms them: [B, C, P, P]
    one = g.const(np.float32(1.0), name="one")
    wx_r = g.unsqueeze(wx, [2], "reassembly.wx_row")  # [B, C, 1, P]
    wy_c = g.unsqueeze(wy, [3], "reassembly.wy_col")  # [B, C, P, 1]
    omx = g.op("Sub", [one, wx_r], "reassembly.one_minus_wx")
    omy = g.op("Sub", [one, wy_c], "reassembly.one_minus_wy")
    wa = g.op("Mul", [omx, omy], "reassembly.wa")
    wb = g.op("Mul", [wx_r, omy], "reassembly.wb")
    wc = g.op("Mul", [omx, wy_c], "reassembly.wc")
    wd = g.op("Mul", [wx_r, wy_c], "reassembly.wd")

    def translate(img: str, tag: str, ri_axis: bool) -> str:
        """Bilinear zero-fill translation of ``img`` ([B, C, (2,) P, P] or a broadcastable constant)."""
        sel = {}
        ws = {"a": wa, "b": wb, "c": wc, "d": wd}
        if ri_axis:  # selectors and weights gain a broadcast axis for (real, imag)
            sy = {k: g.unsqueeze(v, [2], f"reassembly.{k}_ri") for k, v in (("y0", sy0), ("y1", sy1))}
            sx = {k: g.unsqueeze(v, [2], f"reassembly.{k}_ri") for k, v in (("x0", sx0t), ("x1", sx1t))}
            ws = {k: g.unsqueeze(v, [2], f"reassembly.w{k}_ri") for k, v in ws.items()}
        else:
            sy, sx = {"y0": sy0, "y1": sy1}, {"x0": sx0t, "x1": sx1t}
        rows = {k: g.op("MatMul", [v, img], f"reassembly.{tag}.rows_{k}") for k, v in sy.items()}
        for key, (yk, xk) in {"a": ("y0", "x0"), "b": ("y0", "x1"), "c": ("y1", "x0"), "d": ("y1", "x1")}.items():
            sel[key] = g.op("MatMul", [rows[yk], sx[xk]], f"reassembly.{tag}.I{key}")
        terms = [g.op("Mul", [ws[k], sel[k]], f"reassembly.{tag}.w{k}I{k}") for k in "abcd"]
        acc = terms[0]
        for k, t in zip("bcd", terms[1:]):
            acc = g.op("Add", [acc, t], f"reassembly.{tag}.sum_{k}")
        return acc

    # numerator: pad every (patch, real/imag) plane to P, translate, sum the group's patches
    planes = g.op("Transpose", [obj_ri], "reassembly.planes", perm=[0, 1, 4, 2, 3])  # [B, C, 2, N, N]
    pads = g.ints([0, 0, 0, half, half, 0, 0, 0, half, half], "pad_reassembly")
    planes = g.op("Pad", [planes, pads], "reassembly.padded", mode="constant")
    moved = translate(planes, "obj", True)  # [B, C, 2, P, P]
    num = g.reduce("ReduceSum", moved, [1], "reassembly.numerator", keepdims=0)  # [B, 2, P, P]

    # normaliser: the same translation of the (padded) centre mask, summed, + 0.001
    mask = np.zeros((P, P), np.float32)
    mask[half : half + N, half : half + N] = centre_mask(N)
    mask_c = g.initializer("reassembly.center_mask", mask[None, None])  # [1, 1, P, P]
    moved_mask = translate(mask_c, "mask", False)  # [B, C, P, P]
    den = g.reduce("ReduceSum", moved_mask, [1], "reassembly.mask_sum", keepdims=1)  # [B, 1, P, P]
    den = g.op("Add", [den, g.const(NORM_EPSILON, name="norm_eps")], "reassembly.denominator")
    canvas = g.op("Div", [num, den], "reassembly.canvas")  # [B, 2, P, P]

    trimmed = g.slice(canvas, [half, half], [half + N, half + N], [2, 3], "reassembly.trim")
    t = g.op("Transpose", [trimmed], "reassembly.to_nhwc", perm=[0, 2, 3, 1])  # [B, N, N, 2]
    return g.unsqueeze(t, [3], TRIMMED_NAME)  # [B, N, N, 1, 2]
