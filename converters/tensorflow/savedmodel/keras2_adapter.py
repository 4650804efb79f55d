"""Keras 2 config -> the project's graph analysis -> checkpoint key per canonical tensor.

Why: :func:`analyse_config` (the ``.keras`` reader's role assignment) reads Keras 3 configs and
refuses Lambda/TFOpLambda outright. Rather than write a second role algorithm, the already
allow-listed Keras 2 graph is re-expressed as the Keras 3 shapes it understands: the same layer
names and wiring (``__keras_tensor__`` histories), channel slices as ``GetItem`` ``__slice__`` args,
and the five Lambdas as the classes that replaced them upstream (``amp``/``phi`` ->
``ActivationLayer``, ``obj`` -> ``CombineComplexLayer``, ``padded_obj_2`` ->
``ReassemblePatchesLayer``/``PadReconstructionLayer``, ``trimmed_obj`` -> ``TrimReconstructionLayer``).
Facts the Keras 2 config cannot hold (the amp activation and the padded size live in bytecode /
params) are injected from ``params.dill`` and reported as such. Conv hyper-parameters, pooling,
upsampling, padding and the centre-mask constants are checked here because the role analysis
does not look at them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from converters.tensorflow.keras_graph import analyse_config
from converters.tensorflow.savedmodel.keras2_config import Keras2Model
from ptycho_bridge.errors import SpecError

CHANNEL_SLICES = {(-4, None), (None, -4)}


def _tuple(x: Any) -> Any:
    """Keras 2 ``{"class_name": "__tuple__", "items": [...]}`` -> list (recursively)."""
    if isinstance(x, dict) and x.get("class_name") == "__tuple__" and isinstance(x.get("items"), list):
        return [_tuple(i) for i in x["items"]]
    if isinstance(x, list):
        return [_tuple(i) for i in x]
    if isinstance(x, dict):
        return {k: _tuple(v) for k, v in x.items()}
    return x


def channel_slice(layer: Any) -> tuple[Any, Any] | None:
    """(start, stop) of a ``SlicingOpLambda`` ``x[..., a:b]``; None for any other slice spec."""
    node = layer.inbound[0] if len(layer.inbound) == 1 else None
    spec = node[3].get("slice_spec") if isinstance(node, list) and len(node) == 4 and isinstance(node[3], dict) else None
    items = spec.get("items") if isinstance(spec, dict) and spec.get("class_name") == "__tuple__" else None
    if (isinstance(items, list) and len(items) == 2 and items[0] == {"class_name": "__ellipsis__"}
            and isinstance(items[1], dict) and set(items[1]) == {"start", "stop", "step"} and items[1]["step"] is None):
        se = (items[1]["start"], items[1]["stop"])
        if se in CHANNEL_SLICES:
            return se
    return None


def analysis_config(model: Keras2Model, *, amp_activation: str, padded_size: int) -> dict[str, Any]:
    """The Keras 3-shaped config :func:`analyse_config` reads, built from the checked Keras 2 graph."""
    layers = []
    for layer in model.layers:
        cls, cfg, extra = f"Keras2{layer.class_name}", {}, []
        if layer.class_name == "InputLayer":
            cls, cfg = "InputLayer", {"batch_shape": _tuple(layer.config.get("batch_input_shape"))}
        elif layer.class_name == "Conv2D":
            cls, cfg = "Conv2D", {"filters": layer.config.get("filters")}
        elif layer.class_name == "SlicingOpLambda" and channel_slice(layer):
            start, stop = channel_slice(layer)  # type: ignore[misc]
            cls, extra = "GetItem", [[{"class_name": "__slice__", "config": {"start": start, "stop": stop, "step": None}}]]
        elif layer.class_name == "Lambda" and layer.name in ("amp", "phi"):
            cls = "ActivationLayer"
            cfg = {"activation_name": amp_activation, "scale": 1.0} if layer.name == "amp" else \
                {"activation_name": "tanh", "scale": math.pi}
        elif layer.class_name == "Lambda" and layer.name == "obj":
            cls, cfg = "CombineComplexLayer", {"use_polar": True}
        elif layer.class_name == "Lambda" and layer.name == "padded_obj_2":
            cls = "ReassemblePatchesLayer" if len(layer.parents) == 2 else "PadReconstructionLayer"
            cfg = {"padded_size": padded_size}
        elif layer.class_name == "Lambda" and layer.name == "trimmed_obj":
            cls = "TrimReconstructionLayer"
        elif layer.class_name == "TFOpLambda" and layer.config.get("function") == "math.subtract":
            cls = "CenterMaskLayer"  # 1 − ZeroPad(ones): the border mask (constants checked in check_layers)
        args = [{"class_name": "__keras_tensor__", "config": {"keras_history": [p, 0, 0]}} for p in layer.parents]
        layers.append({"class_name": cls, "name": layer.name, "config": cfg,
                       "inbound_nodes": [{"args": args + extra, "kwargs": {}}] if layer.parents else []})
    return {"class_name": "Functional", "config": {
        "name": model.name, "layers": layers,
        "input_layers": [[n, 0, 0] for n in model.inputs], "output_layers": [[n, 0, 0] for n in model.outputs]}}


def analyse(model: Keras2Model, *, amp_activation: str, padded_size: int, member: str) -> Any:
    """Run the project's role analysis; then check what it does not (hyper-parameters, constants)."""
    graph = analyse_config(analysis_config(model, amp_activation=amp_activation, padded_size=padded_size),
                           member=member)
    check_layers(model, graph, member=member)
    return graph


def _want(ok: bool, msg: str, *, member: str, field: str) -> None:
    if not ok:
        raise SpecError(msg, member=member, field=field)


def check_layers(model: Keras2Model, graph: Any, *, member: str) -> None:
    """Every Conv2D 3x3/'same'/stride 1/bias, relu or linear by role; pools, upsamplings, pads, mask."""
    N = graph.N
    role_of = {r.layer_name: r.canonical for r in graph.convs}
    for layer in model.layers:
        c, f = _tuple(layer.config), f"{layer.name}"
        if layer.class_name == "Conv2D":
            role = role_of.get(layer.name, "")
            act = "linear" if re.fullmatch(r"(amp|phase)\.conv[12]", role) else "relu"
            got = (c.get("kernel_size"), c.get("strides"), c.get("padding"), c.get("data_format"),
                   c.get("dilation_rate"), c.get("groups"), c.get("use_bias"), c.get("activation"))
            want = ([3, 3], [1, 1], "same", "channels_last", [1, 1], 1, True, act)
            _want(got == want, f"Conv2D ({role}) is {got}, expected {want}", member=member, field=f)
        elif layer.class_name == "MaxPooling2D":
            got = (c.get("pool_size"), c.get("strides"), c.get("padding"), c.get("data_format"))
            _want(got == ([2, 2], [2, 2], "same", "channels_last"), f"MaxPooling2D is {got}", member=member, field=f)
        elif layer.class_name == "UpSampling2D":
            got = (c.get("size"), c.get("interpolation"), c.get("data_format"))
            _want(got == ([2, 2], "nearest", "channels_last"), f"UpSampling2D is {got}", member=member, field=f)
        elif layer.class_name == "ZeroPadding2D":
            got = c.get("padding")
            _want(got == [[N // 4, N // 4], [N // 4, N // 4]], f"ZeroPadding2D {got}, expected N/4={N // 4}",
                  member=member, field=f)
        elif layer.class_name == "TFOpLambda":
            fn = layer.config.get("function")
            want_c = {"ones": [N // 2, N // 2, 1], "math.subtract": [1.0]}.get(fn, [] if fn != "math.multiply" else None)
            if want_c is not None:
                _want(layer.constants == want_c, f"{fn} constants {layer.constants}, expected {want_c}",
                      member=member, field=f)
        elif layer.class_name == "SlicingOpLambda" and not channel_slice(layer):
            node = layer.inbound[0] if layer.inbound else None
            spec = node[3].get("slice_spec") if isinstance(node, list) and len(node) == 4 else None
            ok = spec == 0 and len(layer.parents) == 1 and model.by_name[layer.parents[0]].config.get(
                "function") == "compat.v1.shape"
            _want(ok, f"slice {spec!r}: only x[..., :-4], x[..., -4:] and shape(x)[0] are built upstream",
                  member=member, field=f)


def multiply_constants(model: Keras2Model) -> list[float]:
    """Inline constants of ``tf.math.multiply`` ops (the autoencoder's ``exp(log_scale)·x``)."""
    return [float(v) for layer in model.layers if layer.config.get("function") == "math.multiply"
            for v in layer.constants if isinstance(v, (int, float)) and not isinstance(v, bool)]


def checkpoint_keys(model: Keras2Model, graph: Any, *, member: str) -> dict[str, tuple[str, str]]:
    """canonical tensor name -> (checkpoint key, expected variable full_name) for every conv role."""
    out: dict[str, tuple[str, str]] = {}
    for role in graph.convs:
        layer = model.by_name[role.layer_name]
        _want(layer.weight_index is not None, f"conv {layer.name} has no layer_with_weights index", member=member,
              field=layer.name)
        for var, param in (("kernel", "weight"), ("bias", "bias")):
            out[f"{role.canonical}.{param}"] = (
                f"layer_with_weights-{layer.weight_index}/{var}/.ATTRIBUTES/VARIABLE_VALUE", f"{layer.name}/{var}")
    return out
