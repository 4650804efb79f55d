"""ONNX backend: build upstream's ``diffraction_to_obj`` as an ONNX graph and run it with ONNX Runtime.

Why this module exists: an ONNX export is the one engine that needs neither TensorFlow nor PyTorch,
so it is what ``export-onnx`` writes and what parity checks can always run. Exporting the Keras
graph or tracing the torch module is fragile (complex tensors, custom layers, an XLA translation,
in-place mask writes that become ``ScatterND``), so the graph is built here, op by op, straight from
the neutral :class:`~ptycho_bridge.spec.NetworkSpec` and the canonical tensors
(``docs/upstream-architecture.md`` §5). Only ``onnx``/``onnxruntime`` (and numpy) are imported, and
only when a function of this module runs.

Graph contract (what every engine of the project shares, ``ptycho_bridge.conventions``):

- input ``amplitude``: float32 ``[B, C, N, N]``, the canonical ``x_norm`` (what the first conv sees);
- output ``object``: float32 ``[B, Cout, N, N, 2]``, the per-patch complex object with a trailing
  (real, imag) axis, the convention of ONNX's own ``DFT``;
- optional TF reassembly stage (``reassembly=True``): extra input ``positions`` float32
  ``[B, 1, 2, C]`` (TF's ``input_positions``) and extra output ``trimmed_object`` float32
  ``[B, N, N, 1, 2]`` reproducing ``ReassemblePatchesLayer`` + ``TrimReconstructionLayer``
  (per-sample path only, §1.5).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.ops.reassembly import (
    BATCH_COLLAPSE_PATCHES,
    NORM_EPSILON,
    centre_mask,
)
from ptycho_bridge.spec.conventions import ri_to_complex
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.network import (
    AMP_ACTIVATION_KIND,
    CBAM_SPATIAL_KERNEL,
    NetworkSpec,
    check_tensors,
    resolve_padded_size,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    import onnxruntime

INPUT_NAME = "amplitude"
OUTPUT_NAME = "object"
POSITIONS_NAME = "positions"
TRIMMED_NAME = "trimmed_object"
BATCH_DIM = "B"
MIN_OPSET = 17
# torch.nn.BatchNorm2d's default epsilon (TF specs never carry batch norm).
BATCH_NORM_EPSILON = 1e-5


class OnnxExportError(ConversionRefused):
    """The spec/tensors cannot be expressed exactly by this ONNX builder (message says why)."""


# --------------------------------------------------------------------------------------------
# graph building
# --------------------------------------------------------------------------------------------


class _GraphBuilder:
    """Collects nodes and initializers; names every intermediate uniquely after its role."""

    def __init__(self, opset: int) -> None:
        import onnx  # noqa: F401  (fail early, with the real ImportError, if onnx is missing)

        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def initializer(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C", copy=True), name=name))
        return name

    def const(self, value: Any, dtype: Any = np.float32, name: str = "const") -> str:
        """A (deduplicated) constant initializer."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        if key not in self._consts:
            self._consts[key] = self.initializer(name, arr)
        return self._consts[key]

    def ints(self, values: Sequence[int], name: str = "ints") -> str:
        return self.const(list(values), np.int64, name)

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        out = self._unique(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    # -- opset-dependent helpers ----------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: Sequence[int], name: str, keepdims: int = 1) -> str:
        """ReduceMean/ReduceMax/ReduceSum: ``axes`` became an input in opset 18 (13 for ReduceSum)."""
        axes_is_input = self.opset >= 18 or op_type == "ReduceSum"
        if axes_is_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], name, keepdims=keepdims)
        return self.op(op_type, [x], name, axes=list(axes), keepdims=keepdims)

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], name: str) -> str:
        return self.op(
            "Slice",
            [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "slice_axes")],
            name,
        )

    def unsqueeze(self, x: str, axes: Sequence[int], name: str) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "unsqueeze_axes")], name)

    def squeeze(self, x: str, axes: Sequence[int], name: str) -> str:
        return self.op("Squeeze", [x, self.ints(axes, "squeeze_axes")], name)


class _Network:
    """Emits the core network into a :class:`_GraphBuilder`; consumes canonical tensors by name."""

    def __init__(self, g: _GraphBuilder, spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> None:
        self.g = g
        self.spec = spec
        self.tensors = tensors
        self.used: set[str] = set()

    def weight(self, name: str) -> str:
        if name not in self.tensors:
            raise OnnxExportError(f"missing tensor {name!r} required by the network spec")
        self.used.add(name)
        arr = np.asarray(self.tensors[name])
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        return self.g.initializer(name, arr)

    # -- building blocks ------------------------------------------------------------------------
    def conv(self, x: str, prefix: str, *, pad: int = 1, bias: bool = True) -> str:
        inputs = [x, self.weight(f"{prefix}.weight")]
        if bias:
            inputs.append(self.weight(f"{prefix}.bias"))
        k = int(np.asarray(self.tensors[f"{prefix}.weight"]).shape[-1])
        return self.g.op("Conv", inputs, prefix, kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1])

    def batch_norm(self, x: str, prefix: str) -> str:
        """Inference-mode BatchNormalization when the spec has batch norm and the tensors exist."""
        if not self.spec.batch_norm or f"{prefix}.running_mean" not in self.tensors:
            return x
        self.used.add(f"{prefix}.num_batches_tracked")
        ins = [self.weight(f"{prefix}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
        return self.g.op("BatchNormalization", [x, *ins], prefix, epsilon=BATCH_NORM_EPSILON)

    def conv_bn(self, x: str, block: str, j: int) -> str:
        """``conv{j}`` then (torch, batch_norm) ``bn{j}``: upstream's ConvBaseBlock order."""
        return self.batch_norm(self.conv(x, f"{block}.conv{j}"), f"{block}.bn{j}")

    def relu(self, x: str, name: str) -> str:
        return self.g.op("Relu", [x], name)

    def swish(self, x: str, name: str) -> str:
        return self.g.op("Mul", [x, self.g.op("Sigmoid", [x], name + ".sigmoid")], name)

    def activation(self, x: str, kind: str, name: str) -> str:
        kind = AMP_ACTIVATION_KIND.get(kind, kind)
        if kind == "sigmoid":
            return self.g.op("Sigmoid", [x], name)
        if kind == "swish":
            return self.swish(x, name)
        if kind == "softplus":
            return self.g.op("Softplus", [x], name)
        if kind == "relu":
            return self.relu(x, name)
        if kind == "pi_tanh":
            t = self.g.op("Tanh", [x], name + ".tanh")
            return self.g.op("Mul", [t, self.g.const(np.float32(math.pi), name="pi")], name)
        raise OnnxExportError(f"unsupported activation {kind!r}")

    def upsample2(self, x: str, name: str) -> str:
        """Nearest ×2: TF UpSampling2D / torch Upsample(nearest); an exact pixel copy."""
        roi = self.g.const(np.zeros(0, np.float32), name="resize_roi")
        scales = self.g.const([1.0, 1.0, 2.0, 2.0], name="resize_scales_x2")
        return self.g.op(
            "Resize",
            [x, roi, scales],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    def double_conv(self, x: str, block: str) -> str:
        x = self.relu(self.conv_bn(x, block, 1), f"{block}.relu1")
        return self.relu(self.conv_bn(x, block, 2), f"{block}.relu2")

    def cbam(self, x: str, prefix: str) -> str:
        """Upstream torch CBAM: ChannelGate (avg & max pool → shared MLP, summed) then SpatialGate."""
        g = self.g
        p = f"{prefix}.cbam"
        w1, b1 = self.weight(f"{p}.mlp1.weight"), self.weight(f"{p}.mlp1.bias")
        w2, b2 = self.weight(f"{p}.mlp2.weight"), self.weight(f"{p}.mlp2.bias")

        def mlp(pooled: str, tag: str) -> str:
            flat = g.op("Flatten", [pooled], f"{p}.{tag}.flatten", axis=1)
            h = g.op("Gemm", [flat, w1, b1], f"{p}.{tag}.mlp1", transB=1)
            h = g.op("Relu", [h], f"{p}.{tag}.mlp_relu")
            return g.op("Gemm", [h, w2, b2], f"{p}.{tag}.mlp2", transB=1)

        avg = mlp(g.op("GlobalAveragePool", [x], f"{p}.avg_pool"), "avg")
        mx = mlp(g.op("GlobalMaxPool", [x], f"{p}.max_pool"), "max")
        att = g.op("Sigmoid", [g.op("Add", [avg, mx], f"{p}.channel_sum")], f"{p}.channel_sigmoid")
        x = g.op("Mul", [x, g.unsqueeze(att, [2, 3], f"{p}.channel_scale")], f"{p}.channel_out")
        # SpatialGate: concat(max over channels, mean over channels) → 7×7 conv (no bias) → sigmoid
        cmax = g.reduce("ReduceMax", x, [1], f"{p}.spatial_max")
        cmean = g.reduce("ReduceMean", x, [1], f"{p}.spatial_mean")
        comp = g.op("Concat", [cmax, cmean], f"{p}.spatial_compress_in", axis=1)
        sconv = self.conv(comp, f"{p}.spatial", pad=CBAM_SPATIAL_KERNEL // 2, bias=False)
        sgate = g.op("Sigmoid", [sconv], f"{p}.spatial_sigmoid")
        return g.op("Mul", [x, sgate], f"{p}.out")

    # -- the network ----------------------------------------------------------------------------
    def encoder(self, x: str) -> str:
        for i, _ in enumerate(self.spec.encoder_widths):
            x = self.double_conv(x, f"encoder.{i}")
            if self.spec.cbam_encoder:
                x = self.cbam(x, f"encoder.{i}")
            x = self.g.op("MaxPool", [x], f"encoder.{i}.pool", kernel_shape=[2, 2], strides=[2, 2])
        if self.spec.cbam_bottleneck:
            x = self.cbam(x, "bottleneck")
        return x

    def head(self, h: str, head: str, border: str | None) -> str:
        spec, g = self.spec, self.g
        act = spec.amp_activation if head == "amp" else "pi_tanh"
        for d, _ in enumerate(spec.decoder_widths):
            h = self.upsample2(self.double_conv(h, f"{head}.decoder.{d}"), f"{head}.decoder.{d}.up")
        latent = spec.latent_width
        if not spec.pad_object:
            # TF-only head: act(conv2(UpBlock(h))) on all latent channels, N×N directly.
            x2 = self.upsample2(self.double_conv(h, f"{head}.outer"), f"{head}.outer.up")
            return self.activation(self.conv_bn(x2, head, 2), act, f"{head}.act")
        narrow = g.slice(h, [0], [latent - spec.c_outer], [1], f"{head}.narrow_in")
        x1 = self.activation(self.conv_bn(narrow, head, 1), act, f"{head}.act")
        q = spec.N // 4
        pads = g.ints([0, 0, q, q, 0, 0, q, q], "pad_quarter")
        x1 = g.op("Pad", [x1, pads], f"{head}.padded", mode="constant")
        if not spec.probe_big:
            return x1
        outer = g.slice(h, [latent - spec.c_outer], [latent], [1], f"{head}.outer_in")
        x2 = self.upsample2(self.double_conv(outer, f"{head}.outer"), f"{head}.outer.up")
        x2 = self.swish(self.conv_bn(x2, head, 2), f"{head}.outer_swish")
        assert border is not None
        x2 = g.op("Mul", [x2, border], f"{head}.outer_masked")
        return g.op("Add", [x1, x2], f"{head}.sum")

    def build(self, x: str) -> str:
        spec, g = self.spec, self.g
        h = self.encoder(x)
        border = None
        if spec.pad_object and spec.probe_big:
            border = g.initializer("border_mask", 1.0 - centre_mask(spec.N)[None, None])
        amp = self.head(h, "amp", border)
        phase = self.head(h, "phase", border)
        real = g.op("Mul", [amp, g.op("Cos", [phase], "phase.cos")], "object.real")
        imag = g.op("Mul", [amp, g.op("Sin", [phase], "phase.sin")], "object.imag")
        real = g.unsqueeze(real, [-1], "object.real_ri")
        imag = g.unsqueeze(imag, [-1], "object.imag_ri")
        return g.op("Concat", [real, imag], OUTPUT_NAME, axis=-1)


def _check_spec(spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> None:
    """Refuse, with the reason, every variant this builder cannot reproduce exactly."""
    try:
        spec.check()
    except SpecError as exc:  # the head invariants have always been this exporter's refusals
        if exc.field not in ("narrow_head", "outer_tensors"):
            raise
        raise OnnxExportError(exc.reason, field=exc.field) from None
    require(spec, "engine:onnx", error=lambda r: OnnxExportError(r.reason, field=r.field, value=r.value))
    try:  # extra tensors are vetted by _check_batch_norm_coverage once the graph is built
        check_tensors(spec, {n: tuple(np.shape(t)) for n, t in tensors.items()}, member="tensors", check_extra=False)
    except SpecError as exc:
        raise OnnxExportError(exc.reason) from None


def _check_batch_norm_coverage(net: _Network) -> None:
    """Every batch-norm tensor must have been consumed: else a BN sits where the graph has none.

    Also catches ``.bn`` tensors under a spec that says ``batch_norm=False``, and torch BN modules the
    canonical table does not name (they arrive as ``extra.…``), rather than dropping them silently.
    """
    stray = sorted(n for n in net.tensors if ".bn" in n and n not in net.used)
    if stray:
        raise OnnxExportError(
            f"batch-norm tensor(s) {stray[:4]} sit where the ONNX builder applies no BatchNormalization; "
            "refusing rather than silently dropping them"
        )


def _reassembly(g: _GraphBuilder, spec: NetworkSpec, obj_ri: str, positions: str, padded_size: int,
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
    batch-collapsing path) is not reproduced: :func:`run_session` refuses such batches.
    ``centre=False`` leaves the offsets as given (upstream's SavedModel era had no centring).
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


def build_onnx(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    *,
    opset: int = MIN_OPSET,
    metadata: Mapping[str, str] | None = None,
    reassembly: bool = False,
    padded_size: int | None = None,
    reassembly_centre: bool = True,
) -> "onnx.ModelProto":
    """The ``diffraction_to_obj`` core graph (and, with ``reassembly``, TF's reassembly stage).

    ``tensors`` are canonical (OIHW conv weights); ``metadata`` entries (e.g. source sha256, era)
    are added to ``metadata_props`` beside the opset, the spec JSON and the I/O conventions.
    ``padded_size`` overrides ``spec.padded_size`` for the reassembly canvas (torch specs carry none).
    ``reassembly_centre=False`` builds the reassembly without batch-mean centring of the offsets
    (the source model's :attr:`~ptycho_bridge.model.ModelEntry.reassembly_centring`).
    Raises :class:`OnnxExportError` for any variant that cannot be expressed exactly.
    """
    import onnx
    from onnx import TensorProto, helper

    if not isinstance(opset, int) or opset < MIN_OPSET or opset > onnx.defs.onnx_opset_version():
        raise OnnxExportError(
            f"opset {opset!r} is not supported: expected {MIN_OPSET}..{onnx.defs.onnx_opset_version()}",
            field="opset",
            value=opset,
        )
    _check_spec(spec, tensors)
    if reassembly:
        try:
            padded_size = resolve_padded_size(spec, padded_size, what="reassembly=True (pass padded_size=)")
        except SpecError as exc:
            raise OnnxExportError(exc.reason, field=exc.field, value=padded_size) from None

    g = _GraphBuilder(opset)
    g._names.update({INPUT_NAME, POSITIONS_NAME})
    net = _Network(g, spec, tensors)
    out = net.build(INPUT_NAME)
    _check_batch_norm_coverage(net)

    N, C, Cout = spec.N, spec.channels_in, spec.channels_out
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, C, N, N])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, Cout, N, N, 2])]
    meta: dict[str, str] = {
        "producer": "ptycho-bridge",
        "family": spec.family,
        "opset": str(opset),
        "network_spec": json.dumps(spec.to_dict(), sort_keys=True),
        "input_convention": (
            f"{INPUT_NAME}: float32 [B, C, N, N] canonical x_norm (normalised amplitude the first conv "
            "sees; TF: input / exp(f32(ln intensity_scale)), torch: input * input_scale_factor)"
        ),
        "output_convention": f"{OUTPUT_NAME}: float32 [B, Cout, N, N, 2] per-patch object, (real, imag) last",
        "reassembly": "false",
    }
    if reassembly:
        assert padded_size is not None
        if spec.object_big and C != Cout:
            raise OnnxExportError(f"reassembly needs one patch per input channel (C={C}, Cout={Cout})")
        inputs.append(helper.make_tensor_value_info(POSITIONS_NAME, TensorProto.FLOAT, [BATCH_DIM, 1, 2, C]))
        _reassembly(g, spec, out, POSITIONS_NAME, padded_size, centre=reassembly_centre)
        outputs.append(helper.make_tensor_value_info(TRIMMED_NAME, TensorProto.FLOAT, [BATCH_DIM, N, N, 1, 2]))
        meta["reassembly"] = "true"
        meta["reassembly_padded_size"] = str(padded_size)
        meta["reassembly_convention"] = (
            f"{POSITIONS_NAME}: float32 [B, 1, 2, C] TF input_positions ([..., 0, :] = x, [..., 1, :] = y); "
            f"{TRIMMED_NAME}: float32 [B, N, N, 1, 2] = TF trimmed_obj. Per-sample path only: offsets are "
            f"centred over the whole batch (outputs depend on batch composition); TF collapses the batch "
            f"when B·C >= {BATCH_COLLAPSE_PATCHES}, which this graph does not reproduce"
        )
        if not reassembly_centre:
            meta["reassembly_convention"] = meta["reassembly_convention"].replace(
                "offsets are centred over the whole batch (outputs depend on batch composition)",
                "each patch is translated by its own offset, not centred over the batch (upstream's SavedModel era)")
            meta["reassembly_centring"] = "false"
    for key, value in (metadata or {}).items():
        meta[str(key)] = str(value)

    graph = helper.make_graph(g.nodes, "diffraction_to_obj", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="ptycho-bridge",
        doc_string="PtychoPINN CNN diffraction_to_obj, built from canonical tensors by ptycho-bridge",
    )
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def ops_used(model: "onnx.ModelProto") -> list[str]:
    """Sorted distinct op types of a model's graph (for reports)."""
    return sorted({n.op_type for n in model.graph.node})


# --------------------------------------------------------------------------------------------
# running and saving
# --------------------------------------------------------------------------------------------


def _model_bytes(model: "onnx.ModelProto | bytes | str | os.PathLike[str]") -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    return model.SerializeToString()


def session_options(threads: int | None) -> "onnxruntime.SessionOptions":
    """ORT options measured best on small CPUs (docs/performance.md, "Engines").

    ORT_ENABLE_ALL, sequential execution, ``intra_op_num_threads = threads`` (default: all cores)
    and **no spinning**: idle ORT workers otherwise busy-wait between the graph's many small ops,
    which on a shared 2-core box steals the core another process needs (one loaded run: 1.3-2.7x
    faster without; a quieter run: within noise either way).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads is not None else (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def make_session(
    model: "onnx.ModelProto | bytes | str | os.PathLike[str]", *, threads: int | None = None
) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime CPU session with :func:`session_options`; reusable across calls (run, parity, benchmarks)."""
    import onnxruntime as ort

    return ort.InferenceSession(_model_bytes(model), sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


def run_session(
    session: "onnxruntime.InferenceSession", x_norm: np.ndarray, *, positions: np.ndarray | None = None
) -> np.ndarray:
    """Run a session: complex64 ``[B, Cout, N, N]``, or ``[B, N, N, 1]`` when it has the reassembly stage."""
    x = np.ascontiguousarray(np.asarray(x_norm, dtype=np.float32))
    names = {i.name for i in session.get_inputs()}
    feeds: dict[str, np.ndarray] = {INPUT_NAME: x}
    if POSITIONS_NAME in names:
        if positions is None:
            raise ValueError("this model has the reassembly stage: pass positions [B, 1, 2, C]")
        pos = np.ascontiguousarray(np.asarray(positions, dtype=np.float32))
        if pos.ndim != 4 or pos.shape[0] != x.shape[0] or pos.shape[1:3] != (1, 2) or pos.shape[3] != x.shape[1]:
            raise ValueError(f"positions must be [B, 1, 2, C] = {[x.shape[0], 1, 2, x.shape[1]]}, got {list(pos.shape)}")
        if x.shape[0] * x.shape[1] >= BATCH_COLLAPSE_PATCHES:
            raise ValueError(
                f"B·C = {x.shape[0] * x.shape[1]} >= {BATCH_COLLAPSE_PATCHES}: upstream TF takes its "
                "batch-collapsing path there, which the ONNX reassembly does not reproduce; use smaller batches"
            )
        feeds[POSITIONS_NAME] = pos
        (out,) = session.run([TRIMMED_NAME], feeds)
    else:
        if positions is not None:
            raise ValueError("positions given but this model has no reassembly stage (build with reassembly=True)")
        (out,) = session.run([OUTPUT_NAME], feeds)
    return ri_to_complex(out)


def run_onnx(
    model: "onnx.ModelProto | bytes | str | os.PathLike[str]",
    x_norm: np.ndarray,
    *,
    positions: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Build a session for ``model`` and run it once (see :func:`run_session` for the outputs)."""
    return run_session(make_session(model, threads=threads), x_norm, positions=positions)


def save_onnx(model: "onnx.ModelProto | bytes", path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write atomically (``ptycho_bridge.atomic.atomic_write``: temp file, fsync, rename).

    Readers see either the old file or the complete new one, never a partial write. With
    ``overwrite=False`` an existing ``path`` raises :class:`OutputExistsError`, also when it appears
    during the write (the commit is then a hard link, which never clobbers).
    """
    from ptycho_bridge.io.atomic import atomic_write

    target = Path(path)
    data = _model_bytes(model)
    with atomic_write(target, force=overwrite) as fh:
        fh.write(data)
    return target
