"""SavedModel-era archives of networks upstream saved but no fixture holds (test code: writes bytes, runs nothing).

Why: before c03673d (2026-02-10) upstream's TF factory built one-channel amplitude heads at every gridsize
(``ptycho_bridge.spec.history``); the whole SavedModel era (TF <= 2.15 / Keras 2) therefore saved that
variant, but the one SavedModel-era fixture is gridsize 1, where it is invisible (1 == gridsize²). This
module derives a gridsize-g archive from that fixture's members so the readers, engines, ``migrate`` and
``inspect`` can be tested on the variant with weights of our choosing.

What is rewritten, per model (``diffraction_to_obj`` and ``autoencoder``), from the fixture
(``shared/fixtures/upstream-savedmodel/FORMAT.md``):

* ``keras_metadata.pb``: the Keras 2 Functional config (root ``config`` and ``model_config``) and every
  layer node: the inputs' channel count (``batch_input_shape``, ``input_spec``, ``build_input_shape``,
  ``save_spec``, ``full_save_spec``), the heads' ``filters`` from the tensors (phase ``gridsize²``, amplitude
  ``Conv2D(1)`` as the era built them), every ``build_input_shape``/``input_spec`` channel count downstream
  (propagated through the graph, :func:`_channels`), and the input divisor / inverse-scale constants from
  ``intensity_scale``;
* ``variables/variables.{index,data-00000-of-00001}``: each conv's kernel (HWIO) and bias from ``tensors``
  (canonical OIHW), laid out in the fixture's order with new offsets, shapes, sizes and masked crc32cs; the
  object graph is kept (it names variables, never shapes); Adam slots whose variable changed shape become
  zeros of the new shape (the others keep the fixture's bytes);
* ``params.dill``: ``gridsize``, ``offset``, ``max_position_jitter``, ``intensity_scale`` and
  ``output_prefix``, edited in place (same-length opcodes, so the pickle's frame stays valid);
* ``model.h5``: the ``intensity_scale`` attribute.

``saved_model.pb`` and ``fingerprint.pb`` are copied unchanged: they hold TF's traced gridsize-1 graphs,
which no reader of this project opens (upstream loads by rebuilding the model and ``load_weights``,
FORMAT.md §2). N stays the fixture's 64 (N=128 adds an encoder/decoder block: a different layer list).

The layer_with_weights-K -> canonical table below is FORMAT.md §3's, written independently of the
reader's role analysis; gridsize 1 with the fixture's own tensors rebuilds the fixture's checkpoints byte
for byte (``test_variants.py``), which checks the table and the layout against upstream's own bytes.
"""

from __future__ import annotations

import io
import json
import pickletools
import struct
from typing import Any, cast

import h5py
import numpy as np

from converters.tensorflow.savedmodel import protowire
from converters.tensorflow.savedmodel import tensorbundle as tb
from converters.tensorflow.savedmodel.crc import masked_crc32c
from ptycho_bridge.spec.conventions import tf_scale_divisor
from ptycho_bridge.spec.mapping import canonical_to_tf_array
from ptycho_bridge.spec.network import NetworkSpec
from tests.converters.tensorflow.savedmodel.hostile_build import FIXTURE_ZIP, members, metadata_msg, rows, table, to_zip

MODELS = ("diffraction_to_obj", "autoencoder")
FIXTURE_N = 64
# layer_with_weights-K -> canonical conv prefix (FORMAT.md §3, diffraction_to_obj; the autoencoder shares 0..21)
K_TO_CANONICAL = (
    "encoder.0.conv1", "encoder.0.conv2", "encoder.1.conv1", "encoder.1.conv2", "encoder.2.conv1", "encoder.2.conv2",
    "amp.decoder.0.conv1", "phase.decoder.0.conv1", "amp.decoder.0.conv2", "phase.decoder.0.conv2",
    "amp.decoder.1.conv1", "phase.decoder.1.conv1", "amp.decoder.1.conv2", "phase.decoder.1.conv2",
    "amp.outer.conv1", "phase.outer.conv1", "amp.outer.conv2", "phase.outer.conv2",
    "amp.conv2", "phase.conv2", "amp.conv1", "phase.conv1",
)
# Keras layer names of the heads' last convs in the fixture (FORMAT.md §3: K=18..21); their filters follow the tensors
HEAD_LAYERS = {"conv2d_7": "amp.conv2", "conv2d_15": "phase.conv2", "conv2d_6": "amp.conv1", "conv2d_14": "phase.conv1"}
# layers whose output keeps the channel count of their first input (channels-last, per patch)
SAME_CHANNELS = {"MaxPooling2D", "UpSampling2D", "ZeroPadding2D"}
# Lambdas / ops that produce one channel per patch (C) in the autoencoder's forward-model tail
PER_PATCH_TAIL = {"padded_objs_with_offsets", "probe_illumination", "pred_amplitude", "pred_diff_channels",
                  "distribution_lambda"}


def savedmodel_archive(spec: NetworkSpec, tensors: dict[str, np.ndarray], *, intensity_scale: float, offset: int = 4,
                       max_position_jitter: int = 10) -> bytes:
    """A complete ``tf-savedmodel-1`` ``wts.h5.zip`` holding ``tensors`` (canonical OIHW) for ``spec``.

    The heads' output widths are the tensors' (the era's: amp 1, phase gridsize²); other amplitude widths
    build archives upstream never wrote, for hostile tests.
    """
    if spec.N != FIXTURE_N or not spec.object_big or not spec.probe_big or not spec.pad_object:
        raise ValueError("only N=64 object.big/probe.big/pad_object networks (the fixture's layer list) are built")
    C = spec.gridsize**2
    filters = {layer: int(np.shape(tensors[f"{canon}.bias"])[0]) for layer, canon in HEAD_LAYERS.items()}
    files = members(FIXTURE_ZIP)
    divisor = float(tf_scale_divisor(intensity_scale))
    hwio = {f"{c}.{p}": canonical_to_tf_array(f"{c}.{p}", np.asarray(tensors[f"{c}.{p}"], np.float32))
            for c in K_TO_CANONICAL for p in ("weight", "bias")}
    for name in MODELS:
        files[f"{name}/keras_metadata.pb"] = _metadata(files[f"{name}/keras_metadata.pb"], C, filters, divisor)
        index, data = _bundle(files[f"{name}/variables/variables.index"],
                              files[f"{name}/variables/variables.data-00000-of-00001"], hwio)
        files[f"{name}/variables/variables.index"] = index
        files[f"{name}/variables/variables.data-00000-of-00001"] = data
        files[f"{name}/params.dill"] = _params(files[f"{name}/params.dill"], gridsize=spec.gridsize, offset=offset,
                                               jitter=max_position_jitter, intensity_scale=intensity_scale)
        files[f"{name}/model.h5"] = _model_h5(intensity_scale)
    return to_zip(files)


# ------------------------------------------------------------------ keras_metadata.pb


def _channels(layers: list[dict[str, Any]], C: int, filters: dict[str, int]) -> dict[str, int | None]:
    """Output channel count of every layer (None: not an image tensor), by walking the config in order."""
    out: dict[str, int | None] = {}
    for layer in layers:
        cls, name, cfg = layer["class_name"], layer["name"], layer["config"]
        parents = _parents(layer["inbound_nodes"])
        first = out.get(parents[0]) if parents else None
        fn = cfg.get("function") if isinstance(cfg.get("function"), str) else None
        if cls == "InputLayer":
            out[name] = C
        elif cls == "Conv2D":
            out[name] = filters.get(name, cfg["filters"])
        elif cls in SAME_CHANNELS or name in ("amp", "phi"):
            out[name] = first
        elif cls == "SlicingOpLambda":
            spec = layer["inbound_nodes"][0][3]["slice_spec"]
            stop = spec["items"][1]["stop"] if isinstance(spec, dict) else 0
            out[name] = None if spec == 0 else (4 if stop is None else (first or 0) - 4)
        elif fn == "compat.v1.shape":
            out[name] = None
        elif fn == "ones":
            out[name] = 1
        elif name in ("padded_obj_2", "trimmed_obj"):
            out[name] = 1  # the reassembled object: patches summed onto one canvas
        elif name in PER_PATCH_TAIL:
            out[name] = C
        else:  # obj, silu, subtract, multiply, add: broadcast of their inputs
            out[name] = max((out.get(p) or 0) for p in parents) or None
    return out


def _parents(inbound: Any) -> list[str]:
    """Producer names in inbound order (refs ``[name, node, tensor, kwargs]``, also inside kwargs)."""
    found: list[str] = []
    stack = [inbound]
    while stack:
        x = stack.pop(0)
        if isinstance(x, list) and len(x) in (3, 4) and isinstance(x[0], str) and isinstance(x[1], int):
            if x[0] != "_CONSTANT_VALUE":
                found.append(x[0])
            if len(x) == 4:
                stack.extend(x[3].values())
        elif isinstance(x, list):
            stack[:0] = x
        elif isinstance(x, dict):
            stack[:0] = list(x.get("items", [])) if x.get("class_name") == "__tuple__" else list(x.values())
    return found


def _set_last(shape: Any, ch: int | None) -> None:
    """``{"class_name": "TensorShape"|"__tuple__", "items": [None, h, w, c]}``: set c (image shapes only)."""
    items = shape.get("items") if isinstance(shape, dict) else None
    if ch is not None and isinstance(items, list) and len(items) == 4 and isinstance(items[3], int):
        items[3] = ch


def _fix_layer(layer: dict[str, Any], ch: dict[str, int | None], C: int, filters: dict[str, int],
               divisor: float) -> None:
    """One layer's config (inside the root config, or a layer node's own JSON)."""
    name, cfg = layer["name"], layer["config"]
    if layer["class_name"] == "InputLayer":
        for holder in (cfg, layer):
            _set_last(holder.get("batch_input_shape"), C)
    if layer["class_name"] == "Conv2D" and name in filters:
        cfg["filters"] = filters[name]
    if cfg.get("function") == "math.truediv":
        layer["inbound_nodes"][0][3]["y"] = divisor
    if cfg.get("function") == "math.multiply" and layer["inbound_nodes"][0][0] == "_CONSTANT_VALUE":
        layer["inbound_nodes"][0][2] = divisor  # the autoencoder's exp(log_scale)·x
    parents = _parents(layer.get("inbound_nodes", []))
    build = layer.get("build_input_shape")
    if isinstance(build, list):
        for shape, p in zip(build, parents, strict=False):
            _set_last(shape, ch.get(p))
    elif parents:
        _set_last(build, ch.get(parents[0]))
    spec = layer.get("input_spec")
    axes = spec.get("config", {}).get("axes") if isinstance(spec, dict) else None
    if isinstance(axes, dict) and "-1" in axes and parents and ch.get(parents[0]) is not None:
        axes["-1"] = ch[parents[0]]


def _metadata(data: bytes, C: int, filters: dict[str, int], divisor: float) -> bytes:
    msg = metadata_msg(data)
    root = json.loads(msg.nodes[0].metadata)
    ch = _channels(root["config"]["layers"], C, filters)
    for cfg in (root["config"], root["model_config"]["config"]):
        for layer in cfg["layers"]:
            _fix_layer(layer, ch, C, filters, divisor)
    for spec in root["input_spec"]:
        _set_last(spec["config"]["shape"], C)
    for shape in root["build_input_shape"]:
        _set_last(shape, C)
    for ts in root["save_spec"] + root["full_save_spec"]["items"][0][0]:
        _set_last(ts["serialized"][0], C)
    msg.nodes[0].metadata = json.dumps(root)
    for node in msg.nodes[1:]:
        info = json.loads(node.metadata)
        if isinstance(info, dict) and info.get("name") in ch and isinstance(info.get("config"), dict):
            _fix_layer(info, ch, C, filters, divisor)
            node.metadata = json.dumps(info)
    return msg.SerializeToString()


# ------------------------------------------------------------------ TensorBundle


def _bundle(index: bytes, data: bytes, hwio: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """Re-lay the data shard in the fixture's order with the new tensors; re-encode every moved entry."""
    entry_cls = protowire.message_class("BundleEntryProto")
    table_rows = rows(index)
    entries: dict[str, Any] = {}
    for raw_key, value in table_rows[1:]:
        entry = entry_cls()
        entry.ParseFromString(value)
        entries[raw_key.decode()] = entry
    og = entries[tb.OBJECT_GRAPH_KEY]
    variables = tb.object_graph(data[og.offset + _varint_len(data, og.offset) + 4 : og.offset + og.size],
                                member="fixture")
    new_bytes: dict[str, tuple[bytes, tuple[int, ...]]] = {}
    for k, canon in enumerate(K_TO_CANONICAL):
        for var_name, part in (("kernel", "weight"), ("bias", "bias")):
            arr = hwio[f"{canon}.{part}"]
            new_bytes[f"layer_with_weights-{k}/{var_name}/.ATTRIBUTES/VARIABLE_VALUE"] = (
                arr.astype("<f4").tobytes(), tuple(arr.shape))
    shape_by_full = {variables[key].full_name: shape for key, (_, shape) in new_bytes.items()}
    for key, variable in variables.items():
        slot = variable.full_name.split("/", 2)
        if key.startswith("optimizer/_variables/") and len(slot) == 3 and slot[0] == "Adam":
            shape = shape_by_full[slot[2]]
            if shape != tuple(d.size for d in entries[key].shape.dim):
                new_bytes[key] = (np.zeros(shape, "<f4").tobytes(), shape)
    out = bytearray()
    for key in sorted(entries, key=lambda name: entries[name].offset):
        e = entries[key]
        blob = data[e.offset : e.offset + e.size]
        if key in new_bytes:
            blob, shape = new_bytes[key]
            del e.shape.dim[:]
            for d in shape:
                e.shape.dim.add().size = int(d)
            e.crc32c = masked_crc32c(blob)
        e.offset, e.size = len(out), len(blob)
        out += blob
    index_rows = table_rows[:1] + [(k, entries[k.decode()].SerializeToString()) for k, _ in table_rows[1:]]
    return table(index_rows), bytes(out)


def _varint_len(buf: bytes, pos: int) -> int:
    n = 1
    while buf[pos + n - 1] & 0x80:
        n += 1
    return n


# ------------------------------------------------------------------ params.dill, model.h5


def _params(data: bytes, *, gridsize: int, offset: int, jitter: int, intensity_scale: float) -> bytes:
    """Same-length in-place edits of the fixture's pickle (protocol 4, one frame): nothing is unpickled."""
    buf = bytearray(data)
    ints = {"gridsize": gridsize, "offset": offset, "max_position_jitter": jitter}
    # (opcode, argument, byte position); positions are never None for a bytes source
    ops: list[tuple[Any, Any, int]] = [(o, a, cast(int, p)) for o, a, p in pickletools.genops(data)]
    done = set()
    for i, (op, arg, _pos) in enumerate(ops):
        if op.name != "SHORT_BINUNICODE" or arg not in ints and arg not in ("intensity_scale", "output_prefix"):
            continue
        following = [(o, a, p) for o, a, p in ops[i + 1 : i + 60] if o.name != "MEMOIZE"]
        if arg in ints:
            o, _a, p = following[0]
            if o.name != "BININT1" or not 0 <= ints[arg] < 256:
                raise ValueError(f"params.dill {arg}: {o.name} cannot hold {ints[arg]} in place")
            buf[p + 1] = ints[arg]
        elif arg == "intensity_scale":
            o, a, p = next(x for x in following if x[0].name == "SHORT_BINBYTES")
            if len(a) != 4:
                raise ValueError("params.dill intensity_scale is not a float32 scalar")
            buf[p + 2 : p + 6] = struct.pack("<f", intensity_scale)
        else:
            o, a, p = following[0]
            new = a[:-1] + str(gridsize)
            if o.name != "SHORT_BINUNICODE" or not a.endswith("gs1") or len(new) != len(a):
                raise ValueError(f"params.dill output_prefix {a!r} not editable in place")
            buf[p + 2 : p + 2 + len(new)] = new.encode()
        done.add(arg)
    if done != set(ints) | {"intensity_scale", "output_prefix"}:
        raise ValueError(f"params.dill: found only {sorted(done)}")
    return bytes(buf)


def _model_h5(intensity_scale: float) -> bytes:
    """HDF5 with no groups or datasets and one root attribute ``intensity_scale`` (float32), like upstream's."""
    bio = io.BytesIO()
    with h5py.File(bio, "w", libver="earliest") as h5:
        h5.attrs["intensity_scale"] = np.float32(intensity_scale)
    return bio.getvalue()
