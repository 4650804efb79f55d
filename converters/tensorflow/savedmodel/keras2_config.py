"""The Keras 2 Functional config of a SavedModel-era model (root node of ``keras_metadata.pb``).

Why: layer names, classes and wiring exist only there (shared/fixtures/upstream-savedmodel/FORMAT.md §4-5). Keras 2 differs from the
Keras 3 ``config.json`` that :func:`analyse_config` reads: ``inbound_nodes`` are lists of
``[layer, node_index, tensor_index, kwargs]`` (tensors also hide inside kwargs, e.g. ``{"y": [...]}``,
and ``_CONSTANT_VALUE`` entries carry inline constants); ops are ``TFOpLambda`` / ``SlicingOpLambda``
named by their TF API symbol; and five layers are ``Lambda`` whose ``function`` is base64
marshalled CPython bytecode. That bytecode is NEVER decoded or run: a Lambda is recognised by its
name, module, position and wiring, and the config is refused unless its Lambda set is exactly the one
upstream's factory builds at 9c9bda1..67ea583 (``ptycho/model.py``):

* ``diffraction_to_obj``: ``amp`` (``get_amp_activation()``), ``phi`` (``π·tanh``), ``obj``
  (``combine_complex``), ``padded_obj_2`` (``reassemble_patches`` when object.big, else
  ``pad_reconstruction``) — module ``ptycho.model`` — and ``trimmed_obj`` (``ptycho.tf_helper.trim_reconstruction``);
* ``autoencoder``: those plus ``padded_objs_with_offsets``, ``pred_amplitude``, ``pred_diff_channels``
  (``ptycho.model``) and the tfp ``DistributionLambda`` ``distribution_lambda``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ptycho_bridge.errors import FormatError, SpecError, UnsafeArchiveError

D2O_LAMBDAS = {"amp": "ptycho.model", "phi": "ptycho.model", "obj": "ptycho.model",
               "padded_obj_2": "ptycho.model", "trimmed_obj": "ptycho.tf_helper"}
AE_LAMBDAS = {**D2O_LAMBDAS, "padded_objs_with_offsets": "ptycho.model", "pred_amplitude": "ptycho.model",
              "pred_diff_channels": "ptycho.model"}
AE_DISTRIBUTION = {"distribution_lambda": "tensorflow_probability.python.layers.distribution_layer"}
TF_OPS = {"math.truediv", "nn.silu", "compat.v1.shape", "ones", "math.subtract", "math.multiply",
          "__operators__.add"}
PLAIN = {"InputLayer", "Conv2D", "MaxPooling2D", "UpSampling2D", "ZeroPadding2D"}
WEIGHTED = {"Conv2D", "ProbeIllumination"}  # classes that own variables (-> layer_with_weights-K)
MAX_LAYERS = 2000
CONST = "_CONSTANT_VALUE"


@dataclass
class Layer:
    index: int  # J in root.layer-J
    name: str
    class_name: str
    config: dict[str, Any]
    parents: list[str]
    constants: list[Any]
    inbound: list[Any]
    weight_index: int | None = None  # K in layer_with_weights-K


@dataclass
class Keras2Model:
    name: str
    layers: list[Layer]
    inputs: list[str]
    outputs: list[str]
    keras_version: str | None
    by_name: dict[str, Layer] = field(default_factory=dict)

    @property
    def weighted(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.weight_index is not None]


def _is_ref(x: Any) -> bool:
    return (isinstance(x, list) and len(x) in (3, 4) and isinstance(x[0], str) and isinstance(x[1], int)
            and not isinstance(x[1], bool) and (len(x) == 3 or isinstance(x[3], dict)))


def _refs(inbound: Any, *, member: str, field: str) -> tuple[list[str], list[Any]]:
    """Producer names and inline constants of a Keras 2 ``inbound_nodes`` value (iterative walk)."""
    parents: list[str] = []
    constants: list[Any] = []
    stack: list[Any] = [inbound]
    steps = 0
    while stack:
        steps += 1
        if steps > 100_000:
            raise FormatError("inbound_nodes too large", member=member, field=field)
        x = stack.pop()
        if _is_ref(x):
            if x[0] == CONST:
                constants.append(x[2])
            elif x[0] not in parents:
                parents.append(x[0])
            if len(x) == 4:
                stack.append(x[3])
        elif isinstance(x, list):
            stack.extend(reversed(x))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
    return parents, constants


def parse_model(root: Any, *, model_name: str, member: str) -> Keras2Model:
    """Layers, parents and the layer_with_weights numbering from the root node's JSON."""
    if not isinstance(root, dict) or root.get("class_name") != "Functional":
        raise FormatError(f"root node is not a Keras Functional model ({type(root).__name__})", member=member,
                           field="class_name")
    cfg = root.get("config")
    layers_raw = cfg.get("layers") if isinstance(cfg, dict) else None
    if not isinstance(layers_raw, list) or not 0 < len(layers_raw) <= MAX_LAYERS:
        raise FormatError(f"config.layers must be a list of 1..{MAX_LAYERS} layers", member=member, field="config.layers")
    model = Keras2Model(model_name, [], [], [], root.get("keras_version") if isinstance(root.get("keras_version"), str) else None)
    k = 0
    for j, raw in enumerate(layers_raw):
        where = f"config.layers[{j}]"
        if not (isinstance(raw, dict) and isinstance(raw.get("name"), str) and isinstance(raw.get("class_name"), str)
                and isinstance(raw.get("config"), dict) and isinstance(raw.get("inbound_nodes"), list)):
            raise FormatError("layer needs name, class_name, config and inbound_nodes", member=member, field=where)
        name = raw["name"]
        if name in model.by_name:
            raise FormatError(f"duplicate layer name {name!r}", member=member, field=where)
        parents, constants = _refs(raw["inbound_nodes"], member=member, field=f"{where}.inbound_nodes")
        for p in parents:
            if p not in model.by_name:  # config order is topological: a parent must come first (no cycles)
                raise FormatError(f"layer {name!r} consumes {p!r}, which is not an earlier layer", member=member,
                                   field=f"{where}.inbound_nodes")
        layer = Layer(j, name, raw["class_name"], raw["config"], parents, constants, raw["inbound_nodes"])
        if layer.class_name in WEIGHTED:
            layer.weight_index = k
            k += 1
        model.layers.append(layer)
        model.by_name[name] = layer
    for key, target in (("input_layers", model.inputs), ("output_layers", model.outputs)):
        items = cfg.get(key)
        if not isinstance(items, list) or not all(_is_ref(x) and x[0] in model.by_name for x in items):
            raise FormatError(f"{key} must list existing layers", member=member, field=f"config.{key}")
        target.extend(x[0] for x in items)
    return model


def _fail(msg: str, member: str, fieldname: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(msg + "; refused (the archive's Lambda/op set is not the one upstream's factory builds)",
                        member=member, field=fieldname)


def check_allowlist(model: Keras2Model, *, member: str) -> float:
    """Refuse unknown classes, Lambdas, TF ops and modules; check Lambda wiring. Returns the input divisor."""
    ae = model.name == "autoencoder"
    lambdas = AE_LAMBDAS if ae else D2O_LAMBDAS
    found: dict[str, Layer] = {}
    divisors: list[float] = []
    for layer in model.layers:
        where = f"layers[{layer.index}] {layer.name}"
        cls, cfg = layer.class_name, layer.config
        _no_code(layer.inbound, member=member, where=f"{where}.inbound_nodes")
        if cls in ("Lambda", "DistributionLambda"):
            allowed = lambdas if cls == "Lambda" else (AE_DISTRIBUTION if ae else {})
            if layer.name not in allowed:
                raise _fail(f"{cls} layer {layer.name!r} is not one of {sorted(allowed)}", member, where)
            if cfg.get("module") != allowed[layer.name] or cfg.get("function_type") != "lambda" or \
                    cfg.get("arguments", {}) != {} or cfg.get("output_shape") is not None:
                raise _fail(f"{cls} {layer.name!r} has module {cfg.get('module')!r}, function_type "
                            f"{cfg.get('function_type')!r}, arguments/output_shape set", member, where)
            found[layer.name] = layer
            continue
        if cls in ("TFOpLambda", "SlicingOpLambda"):
            fn = cfg.get("function")
            ok = fn == "__operators__.getitem" if cls == "SlicingOpLambda" else fn in TF_OPS
            if not ok or not re.fullmatch(rf"tf\.{re.escape(str(fn))}(_\d+)?", layer.name):
                raise _fail(f"{cls} {layer.name!r} calls {fn!r}", member, where)
            if fn == "math.truediv":
                if layer.parents != ["input"] or len(layer.constants) != 0:
                    raise _fail("tf.math.truediv must divide the 'input' layer", member, where)
                divisors.append(_truediv_y(layer, member=member, where=where))
            continue
        if cls not in PLAIN and not (ae and cls == "ProbeIllumination"):
            raise _fail(f"layer class {cls!r}", member, where)
        _no_code(cfg, member=member, where=where)
    if set(found) != set(lambdas) | (set(AE_DISTRIBUTION) if ae else set()):
        raise _fail(f"Lambda layers {sorted(found)}, expected {sorted(lambdas)}", member, "Lambda")
    if len(divisors) != 1:
        raise _fail(f"{len(divisors)} tf.math.truediv input scalings, expected 1", member, "tf.math.truediv")
    _check_wiring(model, found, member=member)
    return divisors[0]


def _truediv_y(layer: Layer, *, member: str, where: str) -> float:
    """``y`` of ``[["input", 0, 0, {"y": <float>, "name": null}]]``: the divisor baked in at build time."""
    node = layer.inbound[0] if len(layer.inbound) == 1 else None
    raw = node[3].get("y") if _is_ref(node) and len(node) == 4 else None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw <= 0:
        raise SpecError(f"divisor y={raw!r} is not a positive finite constant", member=member, field=f"{where}.y")
    return float(raw)


def _no_code(cfg: Any, *, member: str, where: str) -> None:
    """No Python-code carriers outside allow-listed Lambdas (module/function_type keys), iteratively."""
    stack = [cfg]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            mod = x.get("module")
            if "function_type" in x or (isinstance(mod, str) and not mod.startswith("keras")):
                raise _fail(f"config object carries code or module {mod!r}", member, where)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def _check_wiring(model: Keras2Model, lam: dict[str, Layer], *, member: str) -> None:
    by = model.by_name

    def need(ok: bool, msg: str, name: str) -> None:
        if not ok:
            raise _fail(msg, member, name)

    for head in ("amp", "phi"):
        ps = lam[head].parents
        need(len(ps) == 1 and by[ps[0]].class_name == "Conv2D", f"{head!r} must follow one Conv2D", head)
    ps = lam["obj"].parents
    need(len(ps) == 2, "'obj' must combine two head outputs", "obj")
    anc = [ancestors(model, p) | {p} for p in ps]
    need("amp" in anc[0] and "phi" in anc[1] and "phi" not in anc[0] and "amp" not in anc[1],
         "'obj' inputs must be (amplitude head, phase head)", "obj")
    need(lam["padded_obj_2"].parents in (["obj", "input_positions"], ["obj"]),
         "'padded_obj_2' must take obj (and input_positions)", "padded_obj_2")
    need(lam["trimmed_obj"].parents == ["padded_obj_2"], "'trimmed_obj' must follow padded_obj_2", "trimmed_obj")
    need(model.inputs == ["input", "input_positions"], f"inputs {model.inputs}", "input_layers")
    need(model.outputs[:1] == ["trimmed_obj"] and (model.name == "autoencoder" or len(model.outputs) == 1),
         f"outputs {model.outputs}", "output_layers")
    if model.name == "autoencoder":
        chain = [("padded_objs_with_offsets", ["padded_obj_2", "input_positions"]),
                 ("pred_amplitude", ["probe_illumination"]), ("pred_diff_channels", ["pred_amplitude"])]
        for name, want in chain:
            need(lam[name].parents == want, f"{name!r} must take {want}", name)


def ancestors(model: Keras2Model, name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(model.by_name[name].parents)
    while stack:
        cur = stack.pop()
        if cur not in seen:
            seen.add(cur)
            stack.extend(model.by_name[cur].parents)
    return seen
