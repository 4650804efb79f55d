"""Keras 3 / TensorFlow engine: upstream's ``diffraction_to_obj`` rebuilt from a NetworkSpec + canonical tensors.

Why: parity and conversion need a TF network that does not depend on upstream's code (its custom
classes, its global ``params.cfg``, its pickled ``custom_objects``). This module rebuilds the same
layer math (``../shared/docs/upstream-architecture.md`` §1.3–1.5) from standard Keras layers and a few small
layers of our own, and loads the canonical tensors into it strictly.

Three models, nested so one set of weights serves all of them:

- the **core** (:data:`CORE_NAME`): canonical-convention network, input ``x_norm`` NHWC float32
  ``[B, N, N, C]`` (what the first conv sees), output ``obj`` complex64 ``[B, N, N, Cout]``;
- :func:`build_keras_model` with an ``intensity_scale``: upstream's input convention, i.e. the core
  behind an ``IntensityScaler`` (``x / exp(float32(ln s))``, the log-scale a non-trainable weight);
  with ``intensity_scale=None`` it returns the core itself;
- :func:`build_diffraction_to_obj`: inputs ``input`` and ``input_positions`` ``[B, 1, 2, C]``,
  output ``trimmed_obj`` ``[B, N, N, 1]`` — the obj model followed by upstream's reassembly + trim in
  TF ops (per-sample path only, with upstream's batch-mean centring; see
  :mod:`ptycho_bridge.spec.reassembly` for what is deliberately not reproduced).

:func:`run_core` always runs the core on canonical NCHW input, skipping any scaler: multiplying
``x_norm`` by ``exp(log_scale)`` only to divide it again would add rounding that is not in the
canonical convention.

TensorFlow is imported on first use, never when this module is imported. Importing this module sets
``TF_ENABLE_ONEDNN_OPTS=0`` and ``TF_CPP_MIN_LOG_LEVEL=2`` unless the caller set them: TF reads the
oneDNN switch once, when TF itself is imported, so it only takes effect if this module is imported
first. With oneDNN off, CPU convolutions run through Eigen, whose kernels are fixed at TF's build
time, so results do not depend on the CPU's instruction set — a steadier reference across machines.
Measured on the upstream fixtures: Eigen (off) reproduces the goldens, which upstream computed with
oneDNN on, to 2–5e-6·max|golden| per region; oneDNN on the same ISA as the golden machine to ~1e-7.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import SpecError
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.mapping import canonical_to_tf_array, tf_to_canonical_array
from ptycho_bridge.spec.network import (
    AMP_ACTIVATION_KIND,
    HEADS,
    NetworkSpec,
    check_tensors,
    expected_tensors,
    resolve_padded_size,
)
from ptycho_bridge.spec.reassembly import BATCH_COLLAPSE_PATCHES, centre_mask

CORE_NAME = "ptychopinn_core"
SCALED_NAME = "ptychopinn_obj"
D2O_NAME = "diffraction_to_obj"


os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@lru_cache(maxsize=1)
def _tf() -> SimpleNamespace:
    """Import TensorFlow/Keras once, quietly, and define our layer classes."""
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")

    class IntensityScaler(keras.layers.Layer):
        """``x / exp(log_scale)`` with ``log_scale = float32(ln s)`` stored as a non-trainable weight."""

        def __init__(self, log_scale: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.log_scale_value = float(log_scale)
            self.log_scale = self.add_weight(
                name="log_scale",
                shape=(),
                dtype="float32",
                initializer=keras.initializers.Constant(np.float32(log_scale)),
                trainable=False,
            )

        def call(self, x: Any) -> Any:
            return x / tf.exp(tf.convert_to_tensor(self.log_scale))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "log_scale": self.log_scale_value}

    class Activation(keras.layers.Layer):
        """Head activation: sigmoid / swish / softplus / relu, or ``scale·tanh`` (phase, scale = π)."""

        def __init__(self, activation_name: str, scale: float = 1.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.activation_name = activation_name
            self.scale = float(scale)

        def call(self, x: Any) -> Any:
            fn = {
                "sigmoid": tf.nn.sigmoid,
                "swish": tf.nn.silu,
                "softplus": tf.math.softplus,
                "relu": tf.nn.relu,
                "tanh": tf.math.tanh,
            }[AMP_ACTIVATION_KIND.get(self.activation_name, self.activation_name)]
            y = fn(x)
            return y * self.scale if self.scale != 1.0 else y

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "activation_name": self.activation_name, "scale": self.scale}

    class OuterGate(keras.layers.Layer):
        """Outer (probe.big) branch end: ``swish(x) · (1 − M)``, the border mask as a constant."""

        def __init__(self, N: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.N = int(N)
            self._border = (1.0 - centre_mask(self.N))[None, :, :, None].astype(np.float32)

        def call(self, x: Any) -> Any:
            return tf.nn.silu(x) * tf.constant(self._border)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "N": self.N}

    class CombineComplex(keras.layers.Layer):
        """``amp·cos φ + i·amp·sin φ`` (polar) or the legacy ``amp + i·φ``."""

        def __init__(self, use_polar: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.use_polar = bool(use_polar)

        def call(self, inputs: Any) -> Any:
            amp, phase = inputs
            if self.use_polar:  # a 1-channel amp broadcasts over the phase channels
                return tf.complex(amp * tf.math.cos(phase), amp * tf.math.sin(phase))
            return tf.complex(tf.broadcast_to(amp, tf.shape(phase)), phase)

        def compute_output_spec(self, inputs: Any) -> Any:
            return keras.KerasTensor(inputs[1].shape, dtype="complex64")

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "use_polar": self.use_polar}

    class ReassembleTrim(keras.layers.Layer):
        """Upstream's ReassemblePatchesLayer (per-sample path) + TrimReconstructionLayer, in TF ops."""

        def __init__(self, N: int, padded_size: int, channels: int, centre: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.N, self.padded_size, self.channels = int(N), int(padded_size), int(channels)
            self.centre = bool(centre)  # batch-mean centring of the offsets (False: SavedModel era)
            self.pad = (self.padded_size - self.N) // 2
            canvas = self.N + 2 * self.pad
            mask = np.pad(centre_mask(self.N), self.pad)
            self._mask = np.broadcast_to(mask, (1, canvas, canvas)).astype(np.float32)

        def call(self, inputs: Any) -> Any:
            obj, positions = inputs  # [B, N, N, C] complex64, [B, 1, 2, C] float32
            N, C, pad = self.N, self.channels, self.pad
            P = N + 2 * pad
            off = tf.reshape(tf.transpose(positions[:, 0], [0, 2, 1]), [-1, 2])  # [B·C, 2], k = b·C + c
            if self.centre:
                off = off - tf.reduce_mean(off, axis=0, keepdims=True)
            patches = tf.reshape(tf.transpose(obj, [0, 3, 1, 2]), [-1, N, N])  # [B·C, N, N]
            paddings = [[0, 0], [pad, pad], [pad, pad]]
            real = _translate(tf, tf.pad(tf.math.real(patches), paddings), off)
            imag = _translate(tf, tf.pad(tf.math.imag(patches), paddings), off)
            ones = tf.tile(tf.constant(self._mask), [tf.shape(off)[0], 1, 1])
            norm = _translate(tf, ones, off)

            def merge(t: Any) -> Any:
                t = tf.reshape(t, [-1, C, P, P])
                acc = t[:, 0]
                for c in range(1, C):
                    acc = acc + t[:, c]
                return acc

            denom = merge(norm) + np.float32(0.001)
            out = tf.complex(merge(real) / denom, merge(imag) / denom)
            return out[:, pad : pad + N, pad : pad + N, None]

        def compute_output_spec(self, inputs: Any) -> Any:
            return keras.KerasTensor((inputs[0].shape[0], self.N, self.N, 1), dtype="complex64")

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "N": self.N, "padded_size": self.padded_size, "channels": self.channels,
                    "centre": self.centre}

    class PadTrimIdentity(keras.layers.Layer):
        """object.big=False: upstream pads to padded_size then trims the same amount off — identity."""

        def call(self, inputs: Any) -> Any:
            return inputs[0]

        def compute_output_spec(self, inputs: Any) -> Any:
            return keras.KerasTensor(inputs[0].shape, dtype="complex64")

    return SimpleNamespace(
        tf=tf,
        keras=keras,
        IntensityScaler=IntensityScaler,
        Activation=Activation,
        OuterGate=OuterGate,
        CombineComplex=CombineComplex,
        ReassembleTrim=ReassembleTrim,
        PadTrimIdentity=PadTrimIdentity,
    )


def _translate(tf: Any, images: Any, offsets: Any) -> Any:
    """Bilinear translation with zero fill, op for op as upstream's XLA warp (see reassembly.py).

    ``images`` ``[K, P, P]`` float32; ``out[k, y, x]`` samples ``images[k]`` at ``(x + off_x, y + off_y)``.
    """
    shape = tf.shape(images)
    K, H, W = shape[0], shape[1], shape[2]
    xs = tf.cast(tf.range(W), tf.float32)
    ys = tf.cast(tf.range(H), tf.float32)
    sx = xs[None, None, :] + offsets[:, 0, None, None]  # [K, 1, W]
    sy = ys[None, :, None] + offsets[:, 1, None, None]  # [K, H, 1]
    x0, y0 = tf.floor(sx), tf.floor(sy)
    x1, y1 = x0 + 1.0, y0 + 1.0
    wmax = tf.cast(W - 1, tf.float32)
    hmax = tf.cast(H - 1, tf.float32)
    flat = tf.reshape(images, [K, -1])

    def corner(xv: Any, yv: Any) -> Any:
        ok = (xv >= 0.0) & (xv <= wmax) & (yv >= 0.0) & (yv <= hmax)
        xi = tf.cast(tf.clip_by_value(xv, 0.0, wmax), tf.int32)
        yi = tf.cast(tf.clip_by_value(yv, 0.0, hmax), tf.int32)
        idx = yi * W + xi  # broadcasts to [K, H, W]
        got = tf.gather(flat, tf.reshape(idx, [K, -1]), batch_dims=1)
        return tf.reshape(got, [K, H, W]) * tf.cast(ok, tf.float32)

    ia, ib, ic, id_ = corner(x0, y0), corner(x1, y0), corner(x0, y1), corner(x1, y1)
    wx, wy = sx - x0, sy - y0
    wa = (1.0 - wx) * (1.0 - wy)
    wb = wx * (1.0 - wy)
    wc = (1.0 - wx) * wy
    wd = wx * wy
    return wa * ia + wb * ib + wc * ic + wd * id_


# -- building ----------------------------------------------------------------------------------------
def _check_expressible(spec: NetworkSpec) -> None:
    """Refuse specs whose graph this engine (upstream's TF network) cannot express exactly."""
    spec.check()
    require(spec, "engine:keras", error=lambda r: SpecError(r.reason, field=r.field))


def set_threads(threads: int) -> None:
    """TF's intra-op pool size (one inter-op thread); a no-op once TF has initialised its pools."""
    tf = _tf().tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised its thread pools in this process
        pass


def _conv(k: SimpleNamespace, filters: int, name: str, relu: bool) -> Any:
    return k.keras.layers.Conv2D(
        filters, 3, padding="same", activation="relu" if relu else None, name=name.replace(".", "_")
    )


def _build_core(spec: NetworkSpec) -> tuple[Any, dict[str, Any]]:
    """The core Functional model and its conv layers keyed by canonical prefix."""
    k = _tf()
    layers = k.keras.layers
    convs: dict[str, Any] = {}

    def conv(prefix: str, filters: int, relu: bool) -> Any:
        convs[prefix] = _conv(k, filters, prefix, relu)
        return convs[prefix]

    x_in = k.keras.Input(shape=(spec.N, spec.N, spec.channels_in), name="x_norm", dtype="float32")
    h = x_in
    for i, width in enumerate(spec.encoder_widths):
        h = conv(f"encoder.{i}.conv1", width, True)(h)
        h = conv(f"encoder.{i}.conv2", width, True)(h)
        h = layers.MaxPooling2D(2, padding="same", name=f"encoder_{i}_pool")(h)
    latent = h
    outs = {}
    for head in HEADS:
        h = latent
        for d, width in enumerate(spec.decoder_widths):
            h = conv(f"{head}.decoder.{d}.conv1", width, True)(h)
            h = conv(f"{head}.decoder.{d}.conv2", width, True)(h)
            h = layers.UpSampling2D(2, interpolation="nearest", name=f"{head}_decoder_{d}_up")(h)
        if head == "amp":
            act = k.Activation(spec.amp_activation, name="amp")
        else:
            act = k.Activation("tanh", scale=math.pi, name="phi")
        cout = spec.head_channels(head)
        if spec.pad_object:
            narrow = h[..., : spec.latent_width - spec.c_outer]
            x1 = act(conv(f"{head}.conv1", cout, False)(narrow))
            x1 = layers.ZeroPadding2D(spec.N // 4, name=f"{head}_padded")(x1)
            if not spec.probe_big:
                outs[head] = x1
                continue
            o = h[..., spec.latent_width - spec.c_outer :]
        else:
            o = h
        o = conv(f"{head}.outer.conv1", spec.outer_width, True)(o)
        o = conv(f"{head}.outer.conv2", spec.outer_width, True)(o)
        o = layers.UpSampling2D(2, interpolation="nearest", name=f"{head}_outer_up")(o)
        o = conv(f"{head}.conv2", cout, False)(o)
        if spec.pad_object:
            x2 = k.OuterGate(spec.N, name=f"{head}_outer_gate")(o)
            outs[head] = layers.Add(name=f"{head}_sum")([x1, x2])
        else:
            outs[head] = act(o)
    obj = k.CombineComplex(use_polar=spec.use_polar, name="obj")([outs["amp"], outs["phase"]])
    return k.keras.Model(x_in, obj, name=CORE_NAME), convs


def build_keras_model(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, intensity_scale: float | None) -> Any:
    """Upstream's TF network up to ``obj``, with the canonical tensors loaded (strict).

    With ``intensity_scale`` the model takes upstream's input (``X_norm·s``, NHWC) and divides by
    ``exp(float32(ln s))`` first; with ``None`` it is the core and takes ``x_norm`` NHWC directly.
    Output: ``obj`` complex64 ``[B, N, N, Cout]``.
    """
    _check_expressible(spec)
    check_tensors(spec, {n: tuple(np.shape(v)) for n, v in tensors.items()}, member="keras engine")
    k = _tf()
    core, convs = _build_core(spec)
    for prefix, layer in convs.items():
        w = np.asarray(tensors[f"{prefix}.weight"], dtype=np.float32)
        b = np.asarray(tensors[f"{prefix}.bias"], dtype=np.float32)
        layer.set_weights([canonical_to_tf_array(f"{prefix}.weight", w), b])
    core.ptycho_spec = spec  # what spec_and_tensors (save_keras) reads back: the core knows its network
    if intensity_scale is None:
        return core
    if not (intensity_scale > 0 and math.isfinite(intensity_scale)):
        raise SpecError(f"intensity_scale must be a positive finite number, got {intensity_scale!r}", field="intensity_scale")
    inp = k.keras.Input(shape=(spec.N, spec.N, spec.channels_in), name="input", dtype="float32")
    log_scale = float(np.float32(math.log(float(intensity_scale))))
    scaled = k.IntensityScaler(log_scale, name="intensity_scaler")(inp)
    return k.keras.Model(inp, core(scaled), name=SCALED_NAME)


def build_diffraction_to_obj(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray] | None = None,
    *,
    intensity_scale: float | None,
    obj_model: Any | None = None,
    centre: bool = True,
) -> Any:
    """``[input, input_positions] → trimmed_obj`` ``[B, N, N, 1]``: the obj model + reassembly + trim.

    ``centre`` is the source model's reassembly semantics (``ModelEntry.reassembly_centring``):
    False builds the SavedModel era's stage, which does not centre the offsets on their batch mean.

    Reuses ``obj_model`` (from :func:`build_keras_model`) when given, else builds one from ``tensors``.
    ``spec.padded_size`` is required when ``object_big`` (upstream's ``N + (g−1)·offset + jitter``).
    """
    k = _tf()
    if obj_model is None:
        if tensors is None:
            raise ValueError("give either tensors or obj_model")
        obj_model = build_keras_model(spec, tensors, intensity_scale=intensity_scale)
    C = spec.channels_in
    inp = k.keras.Input(shape=(spec.N, spec.N, C), name="input", dtype="float32")
    pos = k.keras.Input(shape=(1, 2, C), name="input_positions", dtype="float32")
    obj = obj_model(inp)
    if spec.object_big:
        padded = resolve_padded_size(spec, what="the Keras reassembly stage")
        out = k.ReassembleTrim(spec.N, padded, spec.channels_out, centre=centre, name="trimmed_obj")([obj, pos])
    else:
        out = k.PadTrimIdentity(name="trimmed_obj")([obj, pos])
    return k.keras.Model([inp, pos], out, name=D2O_NAME)


# -- running -------------------------------------------------------------------------------------------
def core_of(model: Any) -> Any:
    """The core (unscaled, canonical-input) model inside any model this module built."""
    if model.name == CORE_NAME:
        return model
    for layer in model.layers:
        if getattr(layer, "name", None) == CORE_NAME:
            return layer
        if hasattr(layer, "layers"):
            try:
                return core_of(layer)
            except LookupError:
                continue
    raise LookupError(f"no {CORE_NAME!r} model inside {model.name!r}")


def spec_and_tensors(model: Any) -> tuple[NetworkSpec, dict[str, np.ndarray]]:
    """The spec and the *current* canonical tensors (after any training) of a model this module built.

    ``LookupError`` when ``model`` was not built here (no core, or a core without its spec).
    """
    core = core_of(model)
    spec = getattr(core, "ptycho_spec", None)
    if not isinstance(spec, NetworkSpec):
        raise LookupError(f"{core.name!r} does not record the NetworkSpec it was built from")
    prefixes = sorted({name.rsplit(".", 1)[0] for name in expected_tensors(spec)})
    tensors: dict[str, np.ndarray] = {}
    for prefix in prefixes:
        kernel, bias = core.get_layer(prefix.replace(".", "_")).get_weights()
        tensors[f"{prefix}.weight"] = tf_to_canonical_array(f"{prefix}.weight", np.asarray(kernel, dtype=np.float32))
        tensors[f"{prefix}.bias"] = np.asarray(bias, dtype=np.float32)
    return spec, tensors


def run_core(model: Any, x_norm: np.ndarray) -> np.ndarray:
    """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → per-patch ``obj`` complex64 ``[B, Cout, N, N]``."""
    core = core_of(model)
    x = np.ascontiguousarray(np.transpose(np.asarray(x_norm, dtype=np.float32), (0, 2, 3, 1)))
    out = core(x, training=False)
    return np.ascontiguousarray(np.transpose(np.asarray(out), (0, 3, 1, 2))).astype(np.complex64, copy=False)


def run_tf(model: Any, input_nhwc: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Run a :func:`build_diffraction_to_obj` model on TF-convention inputs → complex64 ``[B, N, N, 1]``.

    The batch is one call (batch-mean centring couples samples); ``B·C ≥ 64`` is refused because
    upstream's output there is batch-collapsed, which this engine does not reproduce.
    """
    x = np.asarray(input_nhwc, dtype=np.float32)
    p = np.asarray(positions, dtype=np.float32)
    reassembles = isinstance(model.get_layer("trimmed_obj"), _tf().ReassembleTrim)
    if reassembles and x.shape[0] * x.shape[-1] >= BATCH_COLLAPSE_PATCHES:
        raise ValueError(
            f"B·C = {x.shape[0] * x.shape[-1]} ≥ {BATCH_COLLAPSE_PATCHES}: upstream batch-collapses here; split the batch"
        )
    out = model([x, p], training=False)
    return np.asarray(out).astype(np.complex64, copy=False)
