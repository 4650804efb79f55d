"""Write TF-era (``tf-modelmanager-1``) legacy members without TensorFlow.

Why: Ptychodus opens ``wts.h5.zip`` through upstream's ``ModelManager.load_multiple_models``, which
reads ``manifest.dill``, then per listed model ``params.dill`` (into ``params.cfg``) and
``model.keras``: Keras deserialises ``config.json`` with upstream's registered layer classes, loads
``model.weights.h5`` into it, and the loader copies ``get_weights()`` *positionally* into a freshly
built upstream model (``set_weights``). Writing those members is therefore a matter of reproducing
upstream's Keras graph exactly — layer names, layer order, configs, weight-file groups — which this
module does from a :class:`NetworkSpec` and canonical tensors, importing neither TensorFlow nor Keras.

What decides the bytes (``docs/upstream-architecture.md`` §1.3–1.8, checked against the fixtures):

- **Names** are Keras auto-names (``conv2d_k``, ``get_item_k`` …) assigned in upstream's
  *construction* order, including layers built but never called (a head's ``conv2`` without
  ``probe.big``). :class:`_Factory` replays the factory's construction sequence with Keras' per-name
  counters.
- **Order** of ``config.layers`` (= ``model.layers`` = ``get_weights()`` order) is Keras'
  ``map_graph``: operations by decreasing depth (longest path to an output), ties broken by first
  visit of a depth-first walk from the outputs through each node's inputs in argument order.
  :func:`_keras_order` is that algorithm; it is what interleaves the amp and phase heads.
- **Weight groups** are ``layers/<alias>/vars`` where the alias is the snake-cased class name with a
  per-class counter over ``model.layers`` (Keras ``_save_container_state``); every layer gets a group
  (with a ``name`` attribute) even without weights, as does a layer's sub-layer (``CenterMaskLayer``
  owns a ``zero_pad``). Conv roles come from :func:`ptycho_bridge.keras_graph.analyse_config` — the
  same code the reader uses — so what we write reads back through one path.

Not written: the ``autoencoder`` model. Its ``config.json`` compiles with upstream's
``realspace_loss``/``negloglik``, which Keras can only resolve through a ``custom_objects.dill``
holding by-reference globals — not plain data. Upstream's loader loads only the models the manifest
lists, and Ptychodus uses ``diffraction_to_obj``.

Unverified (no fixture): the config of ``PadReconstructionLayer`` (``object.big=False``). Every
known upstream version constructs it as ``PadReconstructionLayer(dtype=complex64,
name='padded_obj_2')`` and serialises only the base ``Layer`` keys, so that is what we write; a
``padded_size`` key is deliberately *not* added, because a class that does not accept it would fail to
deserialise, while one that does takes it from ``params.cfg`` (``params.get_padded_size()``).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

import numpy as np

from converters.tensorflow.keras_graph import analyse_config
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.mapping import canonical_to_tf_array
from ptycho_bridge.spec.network import (
    NetworkSpec,
    check_tensors,
    resolve_padded_size,
    tf_padded_size,
    torch_amp_activation,
)

KERAS_VERSION = "3.15.1"  # what upstream's CI installs and what wrote the fixtures
TF_MANIFEST_VERSION = "1.0"
PARAMS_VERSION = "1.0"
PICKLE_PROTOCOL = 4  # upstream's dill default; the fixtures' .dill members are protocol 4
SUPPORTED_MODELS = ("diffraction_to_obj",)
# Keras records ``id()`` of the one float32 DTypePolicy that most layers share. Any integer works when
# loading (it only ties the configs that share it); a constant keeps our output deterministic.
DEFAULT_SHARED_OBJECT_ID = 140000000000000
# Zip timestamps of members Keras writes with ``zf.open(..., 'w')`` (metadata/config) are 1980-01-01;
# the weights member carries the save time. We use one fixed time so equal inputs give equal bytes.
FIXED_SAVE_TIME = datetime(2020, 1, 1, 0, 0, 0)

# Upstream ``params.cfg`` keys that decide the TF graph, and the spec field each must equal.
_ARCH_KEYS: tuple[tuple[str, str], ...] = (
    ("N", "N"),
    ("gridsize", "gridsize"),
    ("n_filters_scale", "n_filters_scale"),
    ("object.big", "object_big"),
    ("probe.big", "probe_big"),
    ("pad_object", "pad_object"),
    ("amp_activation", "amp_activation"),
)
# ``params.DEFAULT_CFG`` values upstream falls back to when params.dill lacks them.
_UPSTREAM_DEFAULT_OFFSET = 4
_UPSTREAM_DEFAULT_JITTER = 10

# Layers owning sub-layers that get their own weight-file group: class → ((attribute, class), ...).
# The sub-layer's name is a Keras auto-name counted over the instances in construction order.
_SUBLAYERS: dict[str, tuple[tuple[str, str], ...]] = {"CenterMaskLayer": (("zero_pad", "ZeroPadding2D"),)}
_OP_MODULE_PREFIX = "keras.src.ops."


# --------------------------------------------------------------------------------------------------
# Keras naming helpers (the same rules as keras.src.utils.naming)
# --------------------------------------------------------------------------------------------------
def to_snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: ``UpSampling2D`` → ``up_sampling2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _suffixed(base: str, k: int) -> str:
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

    def __init__(self, spec: NetworkSpec, padded_size: int, shared_object_id: int) -> None:
        self.spec = spec
        self.padded_size = padded_size
        self.sid = shared_object_id
        self.uids: defaultdict[str, int] = defaultdict(int)
        self.nodes: dict[str, _Node] = {}

    # -- plumbing ------------------------------------------------------------------------------
    def auto_name(self, class_name: str) -> str:
        base = to_snake_case(class_name)
        name = _suffixed(base, self.uids[base])
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
        cout = spec.channels_out
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
        obj = self.layer("obj", "CombineComplexLayer", [[amp, phase]], amp.shape, module="ptycho.custom_layers",
                         registered_name="ptycho>CombineComplexLayer", extra={"use_polar": spec.use_polar},
                         build=[self.shape_list(amp), self.shape_list(phase)])
        P = self.padded_size
        complex_policy = {"dtype": "complex64", "shared_policy": False, "out_dtype": "complex64"}
        if spec.object_big:
            padded = self.layer("padded_obj_2", "ReassemblePatchesLayer", [[obj, positions]], (None, P, P, obj.shape[3]),
                                module="ptycho.custom_layers", registered_name="ptycho>ReassemblePatchesLayer",
                                extra={"padded_size": P, "N": N, "gridsize": spec.gridsize},
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
    model_name: str = "diffraction_to_obj",
    padded_size: int | None = None,
    shared_object_id: int = DEFAULT_SHARED_OBJECT_ID,
) -> dict[str, Any]:
    """The Keras 3 ``config.json`` upstream's factory writes for ``model_name`` (as a dict, in Keras' key order).

    ``padded_size`` overrides/supplies ``spec.padded_size`` (upstream: ``params.get_padded_size()``).
    ``shared_object_id`` stands for the Python ``id()`` Keras records for the shared float32 policy.
    """
    if model_name not in SUPPORTED_MODELS:
        raise ConversionRefused(
            f"model {model_name!r}: only {SUPPORTED_MODELS} can be written as TF-era members", field="model", value=model_name
        )
    check_tf_expressible(spec)
    factory = _Factory(spec, resolve_padded_size(spec, padded_size, what="the Keras config", strict=True), shared_object_id)
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


def _weight_groups(config: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(h5 path, layer name, Conv2D layer name or None) for every group Keras' saver creates, in its order."""
    layers = config["config"]["layers"]
    used: defaultdict[str, int] = defaultdict(int)
    sub_count: defaultdict[str, int] = defaultdict(int)
    out: list[tuple[str, str, str | None]] = []
    for layer in layers:
        if str(layer.get("module", "")).startswith(_OP_MODULE_PREFIX):
            continue  # keras ops are not Layers: no group, no alias
        cls = layer["class_name"]
        base = to_snake_case(cls)
        alias = _suffixed(base, used[base])
        used[base] += 1
        out.append((f"layers/{alias}", layer["name"], layer["name"] if cls == "Conv2D" else None))
        for attr, sub_cls in _SUBLAYERS.get(cls, ()):
            sub_base = to_snake_case(sub_cls)
            out.append((f"layers/{alias}/{attr}", _suffixed(sub_base, sub_count[sub_base]), None))
            sub_count[sub_base] += 1
    return out


def model_weights_h5(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> bytes:
    """``model.weights.h5`` for ``config``: Keras' group layout and creation order, kernels HWIO.

    Conv roles (canonical name ↔ layer) come from :func:`analyse_config`, as when reading. Tensors must
    match the spec exactly (missing, extra or mis-shaped → :class:`SpecError`).
    """
    import h5py

    member = "model.weights.h5"
    graph = analyse_config(dict(config), member="config.json")
    for field_name, have, want in (
        ("N", graph.N, spec.N), ("channels_in", graph.channels, spec.channels_in),
        ("n_filters_scale", graph.n_filters_scale, spec.n_filters_scale), ("object_big", graph.object_big, spec.object_big),
        ("pad_object", graph.pad_object, spec.pad_object), ("outer_tensors", graph.outer_branch, spec.outer_tensors),
    ):
        if have != want:
            raise SpecError(f"config.json says {have!r}, the network spec {want!r}", member=member, field=field_name)
    check_tensors(spec, {k: tuple(np.shape(v)) for k, v in tensors.items()}, member=member, allow_extra_prefixes=())
    role_of = {r.layer_name: r.canonical for r in graph.convs}

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        # Keras' _save_state: the model's own (empty) group first, then model.layers in order,
        # each layer's group before its sub-layers'.
        f.create_group("vars").attrs["name"] = config["config"]["name"]
        for path, name, conv in _weight_groups(config):
            group = f.create_group(path).create_group("vars")
            group.attrs["name"] = name
            if conv is None:
                continue
            canonical = role_of[conv]
            for index, param in (("0", "weight"), ("1", "bias")):
                key = f"{canonical}.{param}"
                value = np.asarray(tensors[key])
                if value.dtype != np.float32:
                    raise SpecError(f"tensor {key!r} is {value.dtype}, TF weights are float32", member=member)
                group[index] = canonical_to_tf_array(key, value)
    return buf.getvalue()


def _zip_info(name: str, date_time: tuple[int, ...]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o600 << 16
    return info


def model_keras_bytes(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    *,
    padded_size: int | None = None,
    saved_at: datetime = FIXED_SAVE_TIME,
    shared_object_id: int = DEFAULT_SHARED_OBJECT_ID,
) -> bytes:
    """``model.keras``: a stored zip of ``metadata.json``, ``config.json``, ``model.weights.h5`` as Keras writes it."""
    config = keras_config(spec, padded_size=padded_size, shared_object_id=shared_object_id)
    weights = model_weights_h5(spec, tensors, config)
    metadata = json.dumps({"keras_version": KERAS_VERSION, "date_saved": saved_at.strftime("%Y-%m-%d@%H:%M:%S")})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_zip_info("metadata.json", (1980, 1, 1, 0, 0, 0)), metadata.encode("utf-8"))
        zf.writestr(_zip_info("config.json", (1980, 1, 1, 0, 0, 0)), config_json_bytes(config))
        zf.writestr(_zip_info("model.weights.h5", saved_at.timetuple()[:6]), weights)
    return buf.getvalue()


def model_h5_bytes(intensity_scale: float) -> bytes:
    """``model.h5``: an HDF5 file with one root attribute ``intensity_scale`` (float64); upstream never reads it."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["intensity_scale"] = float(intensity_scale)
    return buf.getvalue()


def _plain(value: Any, key: str) -> Any:
    """``value`` as plain picklable data (numpy scalars → Python), or ConversionRefused naming ``key``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc" or value.dtype.hasobject:
            raise ConversionRefused(f"params[{key!r}] is an array of dtype {value.dtype}, not numeric", field=key)
        return np.ascontiguousarray(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{key}.{k}") for k, v in value.items()}
    raise ConversionRefused(
        f"params[{key!r}] holds {type(value).__name__}, which is not plain data (refusing to pickle it)", field=key
    )


def tf_params(
    spec: NetworkSpec, params: Mapping[str, Any], intensity_scale: float, *, padded_size: int | None = None
) -> dict[str, Any]:
    """The dict upstream's loader puts into ``params.cfg``: ``params`` checked against the spec.

    Architecture keys must agree with the spec (absent ones are filled from it); ``offset`` and
    ``max_position_jitter`` must give the config's ``padded_size`` (absent ones: upstream's defaults,
    written explicitly). ``intensity_scale`` and ``_version='1.0'`` are set as upstream's saver does.
    """
    if not (isinstance(intensity_scale, (int, float)) and not isinstance(intensity_scale, bool)
            and math.isfinite(intensity_scale) and intensity_scale > 0):
        raise SpecError(f"intensity_scale must be a positive finite number, got {intensity_scale!r}", field="intensity_scale")
    out = {str(k): _plain(v, str(k)) for k, v in params.items()}
    for key, attr in _ARCH_KEYS:
        want = getattr(spec, attr)
        if key == "amp_activation" and isinstance(out.get(key), str) and out[key] != want:
            # torch params name the activation torch's way ('silu', or any non-sigmoid string = SiLU);
            # the spec holds the TF name upstream's factory accepts, so that is what params.cfg needs
            if torch_amp_activation(out[key])[0] == want:
                out[key] = want
        if key in out and (out[key] != want or type(out[key]) is not type(want)):
            raise SpecError(f"params says {out[key]!r} but the network spec says {want!r}", member="params.dill", field=key)
        out.setdefault(key, want)
    out.setdefault("offset", _UPSTREAM_DEFAULT_OFFSET)
    out.setdefault("max_position_jitter", _UPSTREAM_DEFAULT_JITTER)
    derived = tf_padded_size(spec.N, spec.gridsize, int(out["offset"]), int(out["max_position_jitter"]))
    target = padded_size if padded_size is not None else spec.padded_size
    if target is not None and target != derived:
        raise SpecError(
            f"N + (gridsize-1)·offset + max_position_jitter = {derived} but the network's padded_size is {target}",
            member="params.dill", field="padded_size",
        )
    out["intensity_scale"] = float(intensity_scale)
    out["_version"] = PARAMS_VERSION
    return out


def tf_legacy_members(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    intensity_scale: float,
    *,
    models: tuple[str, ...] = SUPPORTED_MODELS,
    saved_at: datetime = FIXED_SAVE_TIME,
) -> dict[str, bytes]:
    """Every member upstream's TF ``ModelManager.load_multiple_models`` reads, as ``{member path: bytes}``.

    - ``manifest.dill``: ``{'models': [...], 'version': '1.0'}`` (pickle protocol 4, plain data).
    - ``<model>/params.dill``: :func:`tf_params` pickled; the probe, when present, is a plain numpy
      complex64 array (upstream pickles a TF EagerTensor; its factory accepts either).
    - ``<model>/custom_objects.dill``: the empty dict ``{}``. Upstream's loader passes this dict to
      Keras as ``custom_objects`` after adding ``CenterMaskLayer`` and every ``ptycho.custom_layers``
      class itself; ``IntensityScaler`` resolves through its registered name ``ptycho>IntensityScaler``.
      Upstream's own file holds by-reference class globals (``ptycho.model.IntensityScaler`` …), which
      are not plain data; a dict of *strings* would be worse than empty, since the loader only adds
      ``CenterMaskLayer`` when the key is absent and Keras would then be handed a string as a class.
    - ``<model>/model.keras``: :func:`model_keras_bytes`.
    - ``<model>/model.h5``: one root attribute ``intensity_scale`` (float64).
    """
    for name in models:
        if name not in SUPPORTED_MODELS:
            raise ConversionRefused(
                f"model {name!r}: only {SUPPORTED_MODELS} can be written as TF-era members", field="models", value=name
            )
    if not models:
        raise ConversionRefused("no model to write", field="models")
    padded = spec.padded_size
    if padded is None:
        offset = params.get("offset", _UPSTREAM_DEFAULT_OFFSET)
        jitter = params.get("max_position_jitter", _UPSTREAM_DEFAULT_JITTER)
        padded = tf_padded_size(spec.N, spec.gridsize, int(offset), int(jitter))
    cfg = tf_params(spec, params, intensity_scale, padded_size=padded)
    params_bytes = pickle.dumps(cfg, protocol=PICKLE_PROTOCOL)
    keras_bytes = model_keras_bytes(spec, tensors, padded_size=padded, saved_at=saved_at)
    members: dict[str, bytes] = {
        "manifest.dill": pickle.dumps({"models": list(models), "version": TF_MANIFEST_VERSION}, protocol=PICKLE_PROTOCOL)
    }
    for name in models:
        members[f"{name}/custom_objects.dill"] = pickle.dumps({}, protocol=PICKLE_PROTOCOL)
        members[f"{name}/model.keras"] = keras_bytes
        members[f"{name}/model.h5"] = model_h5_bytes(cfg["intensity_scale"])
        members[f"{name}/params.dill"] = params_bytes
    return members
