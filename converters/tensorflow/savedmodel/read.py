"""Reader for the SavedModel era (upstream 9c9bda1 .. 67ea583, Dec 2024 - Jul 2025; TF <= 2.15 / Keras 2).

Why: these ``wts.h5.zip`` archives share ``manifest.dill`` version ``'1.0'`` with the later ``.keras``
era, so the manifest alone cannot tell them apart (this reader is registered before ``tf-modelmanager-1``
and claims only what is unambiguously its own). What identifies this era, per manifest model:
``<m>/saved_model.pb`` + ``<m>/keras_metadata.pb`` + ``<m>/variables/variables.index`` (+ data shards)
and no ``<m>/model.keras``. ``fingerprint.pb``, ``custom_objects.dill`` and ``model.h5`` (one
``intensity_scale`` attribute) come along. ``saved_model.pb`` (traced graphs) is never read: upstream
loads by rebuilding the model from source and ``load_weights`` (shared/fixtures/upstream-savedmodel/FORMAT.md §2), and everything this
reader needs is in ``keras_metadata.pb``, the checkpoint and ``params.dill``.

Produces the project's :class:`BridgeArchive`: params (safe pickle decoder; the probe's pickled
EagerTensor becomes an ndarray), per model a ``NetworkSpec`` (``spec_from_tf``), canonical OIHW
tensors (lazy, crc32c-checked) and, in ``payload``, the input divisor (the ``tf.math.truediv``
constant), the checkpoint key of each canonical tensor and what else the checkpoint holds.
Nothing is imported from TensorFlow/Keras and nothing from the archive is executed.
"""

from __future__ import annotations

from typing import Any

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.read import check_custom_objects, model_h5_scale
from converters.tensorflow.savedmodel import tensorbundle as tb
from converters.tensorflow.savedmodel.keras2_adapter import (
    analyse,
    checkpoint_keys,
    multiply_constants,
)
from converters.tensorflow.savedmodel.keras2_config import check_allowlist, parse_model
from converters.tensorflow.savedmodel.keras_metadata import (
    cross_check_nodes,
    read_metadata,
)
from converters.tensorflow.spec import spec_from_tf
from ptycho_bridge.errors import FormatError, SpecError
from ptycho_bridge.formats.base import (
    EraReader,
    opaque_names,
    positive_float,
    read_pickle,
    require_dict,
    require_field,
    require_model_names,
)
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import (
    BridgeArchive,
    LazyTensors,
    ModelEntry,
    TensorInfo,
    primary_name,
)
from ptycho_bridge.spec.conventions import tf_scale_divisor
from ptycho_bridge.spec.mapping import tf_to_canonical_array
from ptycho_bridge.spec.network import check_tensors, tf_padded_size

ERA = "tf-savedmodel-1"
REQUIRED = ("saved_model.pb", "keras_metadata.pb", "variables/variables.index", "params.dill")
AE_EXTRA_PREFIXES = ("optimizer/", "keras_api/metrics/")


MANIFEST = "manifest.dill"
MANIFEST_VERSION = "1.0"
MAX_INDEX_BYTES = 64 * 1024 * 1024
# The reassembly semantics of this era: upstream's ReassemblePatchesLayer at 9c9bda1..67ea583 translated
# each patch by its own offset, with no batch-mean centring (added later, with the .keras layout).
CENTRES_OFFSETS = False


def manifest_of(zf: SafeZip, hints: dict[str, Any]) -> Any:
    """``manifest.dill`` decoded once per open archive (cached in ``hints`` under the key every
    ``manifest.dill`` reader shares, so detection decodes it once whichever reader claims it)."""
    if MANIFEST not in hints:
        hints[MANIFEST] = read_pickle(zf, MANIFEST) if MANIFEST in zf else None
    return hints[MANIFEST]


def is_savedmodel_dir(zf: SafeZip, name: str) -> bool:
    """``<name>/`` is a Keras 2 SavedModel directory (and not a Keras 3 ``model.keras`` model)."""
    return (f"{name}/saved_model.pb" in zf and f"{name}/keras_metadata.pb" in zf
            and f"{name}/model.keras" not in zf)


class SavedModelReader(EraReader):
    """``tf-savedmodel-1``: manifest ``'1.0'`` whose every model is a SavedModel directory."""

    era = ERA
    backend = "tensorflow"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        if "manifest.json" in zf or MANIFEST not in zf:
            return False
        manifest = manifest_of(zf, hints)
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            return False
        names = manifest.get("models")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n and "/" not in n
                                                                   and ".." not in n for n in names):
            return False
        return all(is_savedmodel_dir(zf, n) for n in names)

    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        manifest = require_dict(manifest_of(zf, {} if hints is None else hints), member=zf.member_label(MANIFEST),
                                what=MANIFEST)
        where = zf.member_label(MANIFEST)
        names = require_model_names(require_field(manifest, "models", list, member=where), member=where)
        return read_models(zf, names, path)


def read_models(zf: SafeZip, names: list[str], path: str) -> BridgeArchive:
    """Every manifest model -> one :class:`BridgeArchive` (params of the primary model)."""
    models: dict[str, ModelEntry] = {}
    params_by: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for name in names:
        for part in REQUIRED:
            if f"{name}/{part}" not in zf:
                raise FormatError(f"model {name!r} listed in manifest.dill has no {part}",
                                  member=zf.member_label(f"{name}/{part}"))
        pmember = zf.member_label(f"{name}/params.dill")
        params = require_dict(read_pickle(zf, f"{name}/params.dill"), member=pmember, what="params.dill")
        opaque = opaque_names(params)
        if opaque:
            warnings.append(f"{name}/params.dill holds values of unknown type {opaque} (kept inert, never executed)")
        params_by[name] = params
        models[name] = read_model(zf, name, params)
    primary = primary_name(names)
    params = params_by[primary]
    scale = intensity_scale(params, member=zf.member_label(f"{primary}/params.dill"))
    for other, entry in models.items():
        warnings += [f"{other}: {w}" for w in entry.warnings]
    known = {f"{n}/{p}" for n in names for p in REQUIRED + ("fingerprint.pb", "custom_objects.dill", "model.h5")}
    stray = [m for m in zf.names() if m not in known and m != MANIFEST and "/variables/variables.data-" not in m]
    if stray:
        warnings.append(f"members no reader uses: {stray[:8]}")
    return BridgeArchive(path=path, era=ERA, backend="tensorflow", params=params, models=models,
                         intensity_scale=scale, manifest={"models": names, "version": MANIFEST_VERSION},
                         warnings=warnings, members={m.name: m.size for m in zf.iter_members()})


def read_model(zf: SafeZip, name: str, params: dict[str, Any]) -> ModelEntry:
    """One SavedModel directory -> ModelEntry (spec, lazy canonical tensors, payload facts)."""
    meta_member = zf.member_label(f"{name}/keras_metadata.pb")
    pmember = zf.member_label(f"{name}/params.dill")
    root, nodes = read_metadata(zf.read(f"{name}/keras_metadata.pb"), member=meta_member)
    model = parse_model(root, model_name=name, member=meta_member)
    divisor = check_allowlist(model, member=meta_member)
    cross_check_nodes(nodes, model, member=meta_member)
    N = require_field(params, "N", int, member=pmember)
    g = require_field(params, "gridsize", int, member=pmember)
    padded = tf_padded_size(N, g, require_field(params, "offset", int, member=pmember),
                            require_field(params, "max_position_jitter", int, member=pmember))
    amp = require_field(params, "amp_activation", str, member=pmember)
    graph = analyse(model, amp_activation=amp, padded_size=padded, member=meta_member)
    spec = spec_from_tf(params, graph, member=pmember, config_member=meta_member)

    prefix = f"{name}/variables/variables"
    index_member = zf.member_label(f"{prefix}.index")

    def shard_size(i: int, n: int) -> int:
        shard = tb.shard_name(prefix, i, n)
        if shard not in zf:
            raise FormatError(f"data shard {i} of {n} missing", member=zf.member_label(shard), field="shard_id")
        return zf.info(shard).size

    index = tb.parse_index(zf.read(f"{prefix}.index", max_size=MAX_INDEX_BYTES), member=index_member,
                           shard_sizes=shard_size)

    def shard_label(i: int) -> str:
        return zf.member_label(tb.shard_name(prefix, i, index.num_shards))

    used_shards = sorted({e.shard_id for e in index.entries.values()})
    shards = {i: zf.read(tb.shard_name(prefix, i, index.num_shards)) for i in used_shards}
    og = index.entries.get(tb.OBJECT_GRAPH_KEY)
    if og is None:
        raise FormatError("checkpoint has no object graph", member=index_member, field=tb.OBJECT_GRAPH_KEY)
    variables = tb.object_graph(tb.read_tensor(og, shards[og.shard_id], member=shard_label(og.shard_id)),
                                member=index_member)
    keys = checkpoint_keys(model, graph, member=meta_member)
    infos, shapes, extra = _account(index, variables, keys, model, name, member=index_member)
    check_tensors(spec, shapes, member=index_member)

    def load() -> dict[str, np.ndarray]:
        """Canonical OIHW tensors, each crc32c-checked when read (lazy: ``inspect`` needs none)."""
        out = {}
        for canon, (key, _full) in keys.items():
            e = index.entries[key]
            out[canon] = tf_to_canonical_array(canon, tb.read_tensor(e, shards[e.shard_id], member=shard_label(e.shard_id)))
        return out

    warnings: list[str] = []
    upstream_divisor = float(tf_scale_divisor(intensity_scale(params, member=pmember)))
    if np.float32(divisor) != np.float32(upstream_divisor):
        warnings.append(f"config divisor {divisor!r} != float32(exp(float32(log(params intensity_scale)))) "
                        f"{upstream_divisor!r}: upstream's load_model rebuilds the graph from params")
    for c in multiply_constants(model):
        if np.float32(c) != np.float32(divisor):
            warnings.append(f"inverse-scale constant {c!r} differs from the input divisor {divisor!r}")
    payload: dict[str, Any] = {
        "kind": "savedmodel", "keras_version": model.keras_version, "input_divisor": divisor,
        "input_divisor_source": f"{meta_member}: tf.math.truediv inbound_nodes[0][3]['y']",
        "input_divisor_upstream_load": upstream_divisor, "padded_size_source": "params.dill (not in the Keras 2 config)",
        "amp_activation_source": "params.dill (the 'amp' Lambda's bytecode is never decoded)",
        "checkpoint_keys": {c: k for c, (k, _f) in keys.items()}, "layers": len(model.layers),
        "outputs": list(model.outputs), "extra_tensors": extra, "saved_model_pb": "present, not read",
        "reassembly": "each patch translated by its own offset (no batch-mean centring)",
    }
    payload.update(_side_members(zf, name, params, index, shards, variables, extra, member=shard_label(0)))
    return ModelEntry(name, spec, LazyTensors(infos, load), infos, payload=payload, warnings=warnings,
                      reassembly_centring=CENTRES_OFFSETS)


def intensity_scale(params: dict[str, Any], *, member: str) -> float:
    """``params['intensity_scale']`` (a ``numpy.float32`` in this era; :func:`require_field` converts it)."""
    value = require_field(params, "intensity_scale", (int, float), member=member)
    return positive_float(value, member=member, field="intensity_scale")


def _account(index: Any, variables: dict[str, Any], keys: dict[str, tuple[str, str]], model: Any, name: str, *,
             member: str) -> tuple[dict[str, Any], dict[str, tuple[int, ...]], dict[str, int]]:
    """Every checkpoint key must be a conv of a role, the object graph, or (autoencoder) known training state."""
    infos: dict[str, Any] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for canon, (key, full_name) in keys.items():
        entry = index.entries.get(key)
        var = variables.get(key)
        if entry is None or var is None:
            raise SpecError(f"checkpoint lacks {key} ({canon})", member=member, field=key)
        if var.full_name != full_name or "/".join(var.path) + "/.ATTRIBUTES/VARIABLE_VALUE" != key:
            raise SpecError(f"object graph names {key} {var.full_name!r} at {'/'.join(var.path)!r}; the Keras config "
                             f"expects {full_name!r}", member=member, field=key)
        if entry.dtype != 1:
            raise SpecError(f"{entry.dtype_name}, expected float32", member=member, field=f"{key}.dtype")
        shape = entry.shape if len(entry.shape) != 4 else (entry.shape[3], entry.shape[2], entry.shape[0], entry.shape[1])
        shapes[canon] = shape
        infos[canon] = TensorInfo(canon, shape, "float32", source_name=key)
    used = {k for k, _ in keys.values()} | {tb.OBJECT_GRAPH_KEY}
    extra = {"probe": 0, "optimizer": 0, "metrics": 0}
    probe_layers = [layer.weight_index for layer in model.weighted if layer.class_name == "ProbeIllumination"]
    for key in index.entries:
        if key in used:
            continue
        if key not in variables:
            raise SpecError("tensor not named by the object graph", member=member, field=key)
        if name == "autoencoder" and probe_layers and key == f"layer_with_weights-{probe_layers[0]}/w/.ATTRIBUTES/VARIABLE_VALUE":
            extra["probe"] += 1
        elif name == "autoencoder" and key.startswith(AE_EXTRA_PREFIXES):
            extra["optimizer" if key.startswith("optimizer/") else "metrics"] += 1
        else:
            raise SpecError("checkpoint tensor that no layer of the network owns", member=member, field=key)
    return infos, shapes, extra


def _side_members(zf: Any, name: str, params: dict[str, Any], index: Any, shards: dict[int, bytes], variables: Any,
                  extra: dict[str, int], *, member: str) -> dict[str, Any]:
    """custom_objects.dill (by-reference only), model.h5's scale, the autoencoder probe vs params."""
    out: dict[str, Any] = {}
    if f"{name}/custom_objects.dill" in zf:
        objs = read_pickle(zf, f"{name}/custom_objects.dill")
        out["custom_objects"] = check_custom_objects(objs, member=zf.member_label(f"{name}/custom_objects.dill"))
    if f"{name}/model.h5" in zf:
        out["model_h5_intensity_scale"] = model_h5_scale(zf, f"{name}/model.h5")
    if extra.get("probe"):
        key = next(k for k in index.entries if k.endswith("/w/.ATTRIBUTES/VARIABLE_VALUE"))
        probe = tb.read_tensor(index.entries[key], shards[index.entries[key].shard_id], member=member)
        ref = params.get("probe")
        out["probe_matches_params"] = bool(isinstance(ref, np.ndarray) and probe.size == ref.size
                                           and np.array_equal(probe.reshape(ref.shape), ref))
    return out
