"""The PtychoPINN CNN (``diffraction_to_obj`` up to the per-patch object) emitted op by op into ONNX.

Why it is built by hand: exporting the Keras graph or tracing the torch module is fragile (complex
tensors, custom layers, an XLA translation, in-place mask writes that become ``ScatterND``), so the
network is written here straight from the neutral :class:`~ptycho_bridge.spec.network.NetworkSpec`
and the canonical tensors (``../shared/docs/upstream-architecture.md`` §5): encoder, decoders, amplitude and
phase heads, CBAM, inference-mode batch norm. The graph's input and output names come from
:mod:`converters.onnx.layout`.
"""

from __future__ import annotations

import math
from typing import Mapping

from ptycho_bridge.lazy import numpy as np

from converters.onnx.graph import GraphBuilder, OnnxExportError
from converters.onnx.layout import OUTPUT_NAME
from ptycho_bridge.spec.network import (
    AMP_ACTIVATION_KIND,
    CBAM_SPATIAL_KERNEL,
    NetworkSpec,
)
from ptycho_bridge.spec.history import shares_amp_head
from ptycho_bridge.spec.reassembly import centre_mask

# torch.nn.BatchNorm2d's default epsilon (TF specs never carry batch norm).
BATCH_NORM_EPSILON = 1e-5


class Network:
    """Emits the core network into a :class:`GraphBuilder`; consumes canonical tensors by name.

    ``used`` collects the tensor names consumed, so the exporter can refuse tensors left over.
    """

    def __init__(self, g: GraphBuilder, spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> None:
        self.g = g
        self.spec = spec
        self.tensors = tensors
        self.used: set[str] = set()

    def weight(self, name: str) -> str:
        """The float32 initializer of canonical tensor ``name`` (recorded in ``used``)."""
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
        if spec.outer_mask:  # upstream torchapi-devel adds the outer branch unmasked
            assert border is not None
            x2 = g.op("Mul", [x2, border], f"{head}.outer_masked")
        return g.op("Add", [x1, x2], f"{head}.sum")

    def build(self, x: str) -> str:
        """Emit the whole network from input ``x``; returns the ``object`` output ([B, Cout, N, N, 2])."""
        spec, g = self.spec, self.g
        h = self.encoder(x)
        border = None
        if spec.pad_object and spec.probe_big and spec.outer_mask:
            border = g.initializer("border_mask", 1.0 - centre_mask(spec.N)[None, None])
        amp = self.head(h, "amp", border)
        phase = self.head(h, "phase", border)
        # a 1-channel amp (spec.amp_channels) broadcasts over the phase channels in Mul / Expand
        if spec.use_polar:
            real = g.op("Mul", [amp, g.op("Cos", [phase], "phase.cos")], "object.real")
            imag = g.op("Mul", [amp, g.op("Sin", [phase], "phase.sin")], "object.imag")
        else:  # upstream's .keras-era CombineComplexLayer before 2026-01-26: tf.complex(amp, phase)
            shape = g.op("Shape", [phase], "phase.shape")
            real = g.op("Expand", [amp, shape], "object.real") if shares_amp_head(spec) else amp
            imag = phase
        real = g.unsqueeze(real, [-1], "object.real_ri")
        imag = g.unsqueeze(imag, [-1], "object.imag_ri")
        return g.op("Concat", [real, imag], OUTPUT_NAME, axis=-1)
