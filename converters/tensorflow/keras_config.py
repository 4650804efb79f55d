"""Emit upstream's Keras 3 ``config.json`` for a :class:`NetworkSpec`, without TensorFlow or Keras.

Why: upstream's loader deserialises ``config.json`` with its registered layer classes and copies
``get_weights()`` *positionally* into a freshly built model, so the config we write must be the one
upstream's factory (``create_model_with_gridsize``) serialises — layer names, layer order, configs.
This module replays that factory symbolically; archive writing is :mod:`converters.tensorflow.write`.

What decides the config (``../shared/docs/upstream-architecture.md`` §1.3–1.8, checked against the fixtures):

- **Names** are Keras auto-names (``conv2d_k``, ``get_item_k`` …) assigned in upstream's
  *construction* order, including layers built but never called (a head's ``conv2`` without
  ``probe.big``). :class:`_Factory` replays the factory's construction sequence with Keras' per-name
  counters (:func:`to_snake_case`, :func:`numbered`, the rules of ``keras.src.utils.naming``).
- **Order** of ``config.layers`` (= ``model.layers`` = ``get_weights()`` order) is Keras'
  ``map_graph``: operations by decreasing depth (longest path to an output), ties broken by first
  visit of a depth-first walk from the outputs through each node's inputs in argument order.
  :func:`_keras_order` is that algorithm; it is what interleaves the amp and phase heads.

Unverified (no fixture): the config of ``PadReconstructionLayer`` (``object.big=False``). Every
known upstream version constructs it as ``PadReconstructionLayer(dtype=complex64,
name='padded_obj_2')`` and serialises only the base ``Layer`` keys, so that is what we write; a
``padded_size`` key is deliberately *not* added, because a class that does not accept it would fail to
deserialise, while one that does takes it from ``params.cfg`` (``params.get_padded_size()``).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from converters.tensorflow.layout import SUPPORTED_MODELS
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.network import NetworkSpec, resolve_padded_size

# Keras records ``id()`` of the one float32 DTypePolicy that most layers share. Any integer works when
# loading (it only ties the configs that share it); a constant keeps our output deterministic.
DEFAULT_SHARED_OBJECT_ID = 140000000000000


# --------------------------------------------------------------------------------------------------
# Keras naming helpers (the same rules as keras.src.utils.naming)
# --------------------------------------------------------------------------------------------------
def to_snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: ``UpSampling2D`` → ``up_sampling2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def numbered(base: str, k: int) -> str:
    """Keras' unique-name suffix: the ``k``-th object named ``base`` (``conv2d``, ``conv2d_1``, …)."""
    return base if k == 0 else f"{base}_{k}"


# --------------------------------------------------------------------------------------------------
# A symbolic graph that serialises the way Keras 3 does
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _T:
    """A KerasTensor: who produced it, its shape (batch ``None``) and dtype."""

    producer: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    index: int = 0

    def json(self) -> dict[str, Any]:
        return {
            "class_name": "__keras_tensor__",
            "config": {"shape": list(self.shape), "dtype": self.dtype, "keras_history": [self.producer, 0, self.index]},
        }


@dataclass
class _Node:
    """One operation with its single call: the config entry minus name/inbound_nodes, and its inputs."""

    name: str
    entry: dict[str, Any]
    args: list[Any]
    output: _T
    is_input: bool = False

    def inputs(self) -> list[_T]:
        return list(_flatten_tensors(self.args))


def _flatten_tensors(value: Any) -> Iterable[_T]:
    if isinstance(value, _T):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten_tensors(item)


def _args_json(value: Any) -> Any:
    if isinstance(value, _T):
        return value.json()
    if isinstance(value, list):
        return [_args_json(v) for v in value]
    return value


def _keras_order(nodes: Mapping[str, _Node], inputs: list[str], outputs: list[_T]) -> list[str]:
    """Keras 3 ``functional.map_graph`` order of the operations reachable from ``outputs``.

    Depth = longest path to an output; order = decreasing depth, ties by first visit of a DFS from
    the outputs that walks each node's input tensors in argument order. Inputs not connected to any
    output are kept at depth 0 ahead of the rest (Keras gives them traversal index -1).
    """
    index: dict[str, int] = {}
    finished: set[str] = set()
    post: list[str] = []

    def visit(name: str) -> None:
        # iterative post-order DFS; recursion depth would follow the network's depth
        stack: list[tuple[str, int]] = [(name, 0)]
        while stack:
            cur, i = stack.pop()
            if i == 0:
                if cur in finished:
                    continue
                index.setdefault(cur, len(index))
            node = nodes[cur]
            children = [] if node.is_input else [t.producer for t in node.inputs()]
            while i < len(children) and children[i] in finished:
                i += 1
            if i < len(children):
                stack.append((cur, i + 1))
                stack.append((children[i], 0))
                continue
            if cur not in finished:
                finished.add(cur)
                post.append(cur)

    for out in outputs:
        visit(out.producer)
    depth: dict[str, int] = {}
    for name in reversed(post):
        d = depth.setdefault(name, 0)
        node = nodes[name]
        if not node.is_input:
            for parent in (t.producer for t in node.inputs()):
                depth[parent] = max(depth.get(parent, 0), d + 1)
    for name in inputs:
        if name not in depth:
            depth[name] = 0
            index[name] = -1
    return sorted(depth, key=lambda n: (-depth[n], index[n]))


class _Factory:
    """Replays upstream's TF factory (``create_model_with_gridsize``) symbolically, in its order.

    Every auto-named object takes the next Keras name for its class at *construction*, exactly as
    upstream constructs them; explicit names (``amp``, ``phi``, ``amp_padded`` …) take none.
    """

    def __init__(self, spec: NetworkSpec, padded_size: int, shared_object_id: int, centring: bool = True) -> None:
        self.centring = centring  # ReassemblePatchesLayer form: today's (centring) or the earlier one
        self.spec = spec
        self.padded_size = padded_size
        self.sid = shared_object_id
        self.uids: defaultdict[str, int] = defaultdict(int)
        self.nodes: dict[str, _Node] = {}

    # -- plumbing ------------------------------------------------------------------------------
    def auto_name(self, class_name: str) -> str:
        base = to_snake_case(class_name)
        name = numbered(base, self.uids[base])
        self.uids[base] += 1
        return name

    def policy(self, dtype: str = "float32", *, shared: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None}
        if shared:
            out["shared_object_id"] = self.sid
        return out

    def add(self, node: _Node) -> _T:
        if node.name in self.nodes:
            raise AssertionError(f"duplicate Keras name {node.name!r}")
        self.nodes[node.name] = node
        return node.output

    def layer(
        self,
        name: str,
        class_name: str,
        args: list[Any],
        out_shape: tuple[int | None, ...],
        *,
        module: str = "keras.layers",
        registered_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
        dtype: str = "float32",
        shared_policy: bool = True,
        build: Any = None,
        out_dtype: str = "float32",
    ) -> _T:
        config: dict[str, Any] = {"name": name, "trainable": True, "dtype": self.policy(dtype, shared=shared_policy)}
        config.update(extra or {})
        entry: dict[str, Any] = {"module": module, "class_name": class_name, "config": config, "registered_name": registered_name}
        if build is not None:
            entry["build_config"] = {"input_shape": build}
        return self.add(_Node(name, entry, args, _T(name, out_shape, out_dtype)))

    def op(self, class_name: str, module: str, args: list[Any], out_shape: tuple[int | None, ...]) -> _T:
        name = self.auto_name(class_name)
        entry = {"module": module, "class_name": class_name, "config": {"name": name}, "registered_name": class_name}
        return self.add(_Node(name, entry, args, _T(name, out_shape)))

    @staticmethod
    def shape_list(t: _T) -> list[int | None]:
        return list(t.shape)

    # -- the layers upstream uses ----------------------------------------------------------------
    def input(self, name: str, shape: tuple[int | None, ...]) -> _T:
        config = {"batch_shape": list(shape), "dtype": "float32", "sparse": False, "ragged": False, "name": name, "optional": False}
        entry = {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None}
        return self.add(_Node(name, entry, [], _T(name, shape), is_input=True))

    def new_conv(self, filters: int, activation: str) -> "_Conv":
        return _Conv(self, self.auto_name("Conv2D"), filters, activation)

    def max_pool(self, x: _T) -> _T:
        b, h, w, c = x.shape
        extra = {"pool_size": [2, 2], "padding": "same", "strides": [2, 2], "data_format": "channels_last"}
        return self.layer(self.auto_name("MaxPooling2D"), "MaxPooling2D", [x], (b, _half(h), _half(w), c), extra=extra)

    def up_sample(self, x: _T) -> _T:
        b, h, w, c = x.shape
        extra = {"size": [2, 2], "data_format": "channels_last", "interpolation": "nearest"}
        return self.layer(self.auto_name("UpSampling2D"), "UpSampling2D", [x], (b, 2 * h, 2 * w, c), extra=extra,
                          build=self.shape_list(x))

    def up_block(self, x: _T, filters: int) -> _T:
        """Upstream ``Conv_Up_block``: conv ReLU, conv ReLU, nearest ×2."""
        x = self.new_conv(filters, "relu")(x)
        x = self.new_conv(filters, "relu")(x)
        return self.up_sample(x)

    def zero_pad(self, x: _T, name: str, pad: int) -> _T:
        b, h, w, c = x.shape
        extra = {"padding": [[pad, pad], [pad, pad]], "data_format": "channels_last"}
        return self.layer(name, "ZeroPadding2D", [x], (b, h + 2 * pad, w + 2 * pad, c), extra=extra, build=self.shape_list(x))

    def activation(self, x: _T, name: str, activation_name: str, scale: float) -> _T:
        return self.layer(name, "ActivationLayer", [x], x.shape, module="ptycho.custom_layers",
                          registered_name="ptycho>ActivationLayer",
                          extra={"activation_name": activation_name, "scale": scale}, build=self.shape_list(x))

    def get_item(self, x: _T, start: int | None, stop: int | None) -> _T:
        b, h, w, c = x.shape
        lo, hi, _ = slice(start, stop).indices(int(c))  # type: ignore[arg-type]
        key = [{"class_name": "__ellipsis__", "config": {}},
               {"class_name": "__slice__", "config": {"start": start, "stop": stop, "step": None}}]
        return self.op("GetItem", "keras.src.ops.numpy", [x, key], (b, h, w, hi - lo))

    def center_mask(self, x: _T) -> _T:
        # upstream hh.mk_centermask(x, N, 1, kind='border'): a CenterMaskLayer whose __init__ builds an
        # auto-named ZeroPadding2D (its ``zero_pad``); the mask has one channel and broadcasts.
        name = self.auto_name("CenterMaskLayer")
        self.auto_name("ZeroPadding2D")
        b, h, w, _c = x.shape
        return self.layer(name, "CenterMaskLayer", [x], (b, h, w, 1), module="ptycho.tf_helper",
                          registered_name="CenterMaskLayer", extra={"N": self.spec.N, "c": 1, "kind": "border"},
                          build=self.shape_list(x))

    # -- upstream's functions ---------------------------------------------------------------------
    def decoder_head(self, latent: _T, head: str) -> _T:
        """``create_decoder_amp`` / ``create_decoder_phase`` → ``create_decoder_last``."""
        spec = self.spec
        cout = spec.head_channels(head)  # the amplitude head is 1 wide before upstream c03673d
        conv1 = self.new_conv(cout, "linear")  # both built before the decoder base, used or not
        conv2 = self.new_conv(cout, "linear")
        if head == "amp":
            act_name, act_fn, act_scale, pad_name = "amp", spec.amp_activation, 1.0, "amp_padded"
        else:
            act_name, act_fn, act_scale, pad_name = "phi", "tanh", math.pi, "phase_padded"
        h = latent
        for width in spec.decoder_widths:
            h = self.up_block(h, width)
        if not spec.pad_object:
            x2 = self.up_block(h, spec.outer_width)
            return self.activation(conv2(x2), act_name, act_fn, act_scale)
        x1 = self.get_item(h, None, -spec.c_outer)
        x1 = self.activation(conv1(x1), act_name, act_fn, act_scale)
        x1 = self.zero_pad(x1, pad_name, spec.N // 4)
        if not spec.probe_big:
            return x1
        x2 = self.get_item(h, -spec.c_outer, None)
        x2 = conv2(self.up_block(x2, spec.outer_width))
        x2 = self.op("Silu", "keras.src.ops.nn", [x2], x2.shape)  # keras.activations.swish
        mask = self.center_mask(x2)
        masked = self.op("Multiply", "keras.src.ops.numpy", [x2, mask], x2.shape)
        return self.op("Add", "keras.src.ops.numpy", [x1, masked], x1.shape)

    def diffraction_to_obj(self) -> tuple[list[str], list[_T]]:
        spec, N, C = self.spec, self.spec.N, self.spec.channels_in
        image = self.input("input", (None, N, N, C))
        positions = self.input("input_positions", (None, 1, 2, C))
        h = self.layer("intensity_scaler", "IntensityScaler", [[image]], image.shape, module="ptycho.model",
                       registered_name="ptycho>IntensityScaler", shared_policy=False, build=[self.shape_list(image)])
        for width in spec.encoder_widths:
            h = self.new_conv(width, "relu")(h)
            h = self.new_conv(width, "relu")(h)
            h = self.max_pool(h)
        amp = self.decoder_head(h, "amp")
        phase = self.decoder_head(h, "phase")
        # the layer before upstream's 2026-01-26 fix recorded no use_polar and computed amp + i·phase
        obj = self.layer("obj", "CombineComplexLayer", [[amp, phase]], amp.shape, module="ptycho.custom_layers",
                         registered_name="ptycho>CombineComplexLayer",
                         extra={"use_polar": True} if spec.use_polar else None,
                         build=[self.shape_list(amp), self.shape_list(phase)])
        P = self.padded_size
        complex_policy = {"dtype": "complex64", "shared_policy": False, "out_dtype": "complex64"}
        if spec.object_big:
            padded = self.layer("padded_obj_2", "ReassemblePatchesLayer", [[obj, positions]], (None, P, P, obj.shape[3]),
                                module="ptycho.custom_layers", registered_name="ptycho>ReassemblePatchesLayer",
                                # the earlier layer (no batch-mean centring) recorded none of these
                                extra={"padded_size": P, "N": N, "gridsize": spec.gridsize} if self.centring else None,
                                build=[self.shape_list(obj), self.shape_list(positions)], **complex_policy)
        else:
            padded = self.layer("padded_obj_2", "PadReconstructionLayer", [obj], (None, P, P, obj.shape[3]),
                                module="ptycho.custom_layers", registered_name="ptycho>PadReconstructionLayer",
                                build=self.shape_list(obj), **complex_policy)
        trimmed = self.layer("trimmed_obj", "TrimReconstructionLayer", [padded], (None, N, N, padded.shape[3]),
                             module="ptycho.custom_layers", registered_name="ptycho>TrimReconstructionLayer",
                             extra={"output_size": N}, build=self.shape_list(padded), **complex_policy)
        return ["input", "input_positions"], [trimmed]


class _Conv:
    """A Conv2D built (named) now and called later, as upstream does with each head's conv1/conv2."""

    def __init__(self, factory: _Factory, name: str, filters: int, activation: str) -> None:
        self.factory, self.name, self.filters, self.activation = factory, name, filters, activation

    def __call__(self, x: _T) -> _T:
        f = self.factory
        extra = {
            "filters": self.filters,
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "padding": "same",
            "data_format": "channels_last",
            "dilation_rate": [1, 1],
            "groups": 1,
            "activation": self.activation,
            "use_bias": True,
            "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                   "config": {"seed": None, "input_axes": None, "output_axes": None}, "registered_name": None},
            "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        }
        b, h, w, _c = x.shape
        return f.layer(self.name, "Conv2D", [x], (b, h, w, self.filters), extra=extra, build=f.shape_list(x))


def _half(n: int | None) -> int | None:
    return None if n is None else -(-n // 2)  # 'same' pooling: ceil


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def check_tf_expressible(spec: NetworkSpec) -> None:
    """Refuse a spec upstream's TF factory cannot build: it must equal ``tf_spec`` of its own fields."""
    require(spec, "tensorflow-archive")


def keras_config(
    spec: NetworkSpec,
    *,
    model_name: str = SUPPORTED_MODELS[0],
    padded_size: int | None = None,
    shared_object_id: int = DEFAULT_SHARED_OBJECT_ID,
    reassembly_centring: bool = True,
) -> dict[str, Any]:
    """The Keras 3 ``config.json`` upstream's factory writes for ``model_name`` (as a dict, in Keras' key order).

    ``padded_size`` overrides/supplies ``spec.padded_size`` (upstream: ``params.get_padded_size()``).
    ``shared_object_id`` stands for the Python ``id()`` Keras records for the shared float32 policy.
    ``reassembly_centring=False`` writes the earlier ``ReassemblePatchesLayer`` (no ``padded_size``/``N``/``gridsize``
    in its config, no batch-mean centring), and ``spec.use_polar=False`` the earlier ``CombineComplexLayer`` (no
    ``use_polar``): the layers upstream wrote before its 2026-01-26 fix (``ptycho_bridge.spec.history``).
    """
    if model_name not in SUPPORTED_MODELS:
        raise ConversionRefused(
            f"model {model_name!r}: only {SUPPORTED_MODELS} can be written as TF-era members", field="model", value=model_name
        )
    check_tf_expressible(spec)
    factory = _Factory(spec, resolve_padded_size(spec, padded_size, what="the Keras config", strict=True), shared_object_id,
                       centring=reassembly_centring)
    factory.auto_name("Functional")  # upstream builds the autoencoder Model first: it is "functional"
    model_keras_name = factory.auto_name("Functional")
    inputs, outputs = factory.diffraction_to_obj()
    layers = []
    for name in _keras_order(factory.nodes, inputs, outputs):
        node = factory.nodes[name]
        entry = dict(node.entry)
        entry["name"] = name
        entry["inbound_nodes"] = [] if node.is_input else [{"args": _args_json(node.args), "kwargs": {}}]
        layers.append(entry)
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": model_keras_name,
            "trainable": True,
            "layers": layers,
            "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[t.producer, 0, t.index] for t in outputs],
        },
        "registered_name": "Functional",
        "build_config": {"input_shape": None},
        "compile_config": {},
    }


def config_json_bytes(config: Mapping[str, Any]) -> bytes:
    """``config.json`` as Keras writes it (``json.dumps`` with default separators)."""
    return json.dumps(config).encode("utf-8")

