"""Reader for ``tf-modelmanager-1``: archives written by upstream TF ``ModelManager.save_multiple_models``.

Layout (../shared/docs/upstream-formats.md §2, every name and version in :mod:`converters.tensorflow.layout`):
root ``manifest.dill`` ``{'models': [...], 'version': '1.0'}``; per model ``model.keras`` (Keras 3
zip: ``config.json`` + ``model.weights.h5``), ``params.dill`` (the whole ``params.cfg``; the probe is
a pickled TF eager tensor), ``custom_objects.dill`` (by-reference classes, never needed) and
``model.h5`` (one ``intensity_scale`` attribute). Conv roles come from ``config.json`` alone
(:mod:`converters.tensorflow.keras_graph`).

The legacy-manifest helpers (:func:`read_legacy_manifest`, :func:`check_legacy_manifest`,
:func:`legacy_manifest_warnings`) are shared with the torch-era readers, whose ``manifest.dill``
has the same shape.
"""

from __future__ import annotations

import math
from typing import Any

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.keras_graph import analyse_config
from converters.tensorflow.layout import (
    CONV_VARS,
    CUSTOM_OBJECTS_MEMBER,
    KERAS_CONFIG,
    KERAS_MEMBER,
    KERAS_METADATA,
    KERAS_WEIGHTS,
    MANIFEST_MEMBER,
    MANIFEST_VERSION,
    MAX_MODEL_H5,
    MODEL_H5_MEMBER,
    MODEL_H5_SCALE_ATTR,
    OPTIMIZER_GROUP,
    PARAMS_MEMBER,
    manifest_dict,
    model_member,
    vars_group,
)
from converters.tensorflow.spec import spec_from_tf
from converters.tensorflow.weights_meta import check_loaded, scan_scale, scan_weights
from ptycho_bridge.errors import FormatError, PickleDecodeError, SpecError
from ptycho_bridge.formats.base import (
    EraReader,
    opaque_names,
    positive_float,
    read_json,
    read_pickle,
    require_dict,
    require_field,
    require_str,
)
from ptycho_bridge.formats.legacy import (
    check_legacy_manifest,
    has_legacy_version,
    legacy_manifest_warnings,
    read_legacy_manifest,
)
from ptycho_bridge.io.h5 import (
    get_attr,
    get_dataset,
    open_h5,
    read_array,
    walk_datasets,
)
from ptycho_bridge.io.deferred import DeferredArray, is_array, materialise_tree
from ptycho_bridge.io.h5_isolated import run_isolated
from ptycho_bridge.io.safepickle import Opaque, Record
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import (
    BridgeArchive,
    LazyTensors,
    ModelEntry,
    TensorInfo,
    primary_name,
)
from ptycho_bridge.spec.mapping import tf_to_canonical_array
from ptycho_bridge.spec.network import check_tensors


def check_custom_objects(objs: Any, *, member: str) -> int:
    """``custom_objects.dill`` must map names to by-reference classes/functions, never to calls.

    Why: upstream's loader unpickles it with dill, so a call (``os.system(...)``) stored there would
    run in every Ptychodus that opens the archive; we refuse such an archive instead of carrying it on.
    """
    objs = require_dict(objs, member=member, what=CUSTOM_OBJECTS_MEMBER)
    for key, value in objs.items():
        if not (isinstance(value, Opaque) and value.kind == "global"):
            what = f"a call to {value.type_name}" if isinstance(value, Opaque) else type(value).__name__
            raise PickleDecodeError(f"entry {key!r} is {what}, expected a class or function reference; it was not executed",
                                    member=member, field=str(key))
    return len(objs)


def read_keras_payload(zf: SafeZip, member: str, *, model_name: str, params: dict[str, Any]) -> ModelEntry:
    """One ``model.keras``: graph analysis, spec cross-check, lazy canonical tensors."""
    keras = zf.open_nested(member)
    for required in (KERAS_CONFIG, KERAS_WEIGHTS):
        if required not in keras:
            raise FormatError(f"Keras archive lacks {required!r}", member=keras.label)
    config_label = keras.member_label(KERAS_CONFIG)
    config = read_json(keras, KERAS_CONFIG)
    graph = analyse_config(require_dict(config, member=config_label, what=KERAS_CONFIG), member=config_label)
    spec = spec_from_tf(params, graph, member=zf.member_label(model_member(model_name, PARAMS_MEMBER)),
                        config_member=config_label)
    weights_label = keras.member_label(KERAS_WEIGHTS)
    weights_bytes = keras.read(KERAS_WEIGHTS)
    metadata: dict[str, Any] = {}
    if KERAS_METADATA in keras:
        meta = read_json(keras, KERAS_METADATA)
        metadata = meta if isinstance(meta, dict) else {}
    keras.close()

    conv_paths_wanted = [f"{vars_group(role.alias)}/{index}" for role in graph.convs for index, _ in CONV_VARS]
    scan = scan_weights(weights_bytes, conv_paths_wanted, weights_label)  # pure Python; None: not answered
    if scan is None:
        scan = run_isolated(_scan_weights, weights_bytes, conv_paths_wanted, weights_label, member=weights_label)
    infos: dict[str, TensorInfo] = {}
    paths: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    stored: dict[str, tuple[tuple[int, ...], str, str]] = {}  # as the scan read them, checked against the data
    for role in graph.convs:
        group_path = vars_group(role.alias)
        for index, param in CONV_VARS:
            path = f"{group_path}/{index}"
            found = scan["convs"][path]
            if param == "weight":  # the group's layer name, once per conv
                stored_name = found["name"]
                if stored_name is not None and stored_name != role.layer_name:
                    raise SpecError(
                        f"weight group {group_path} belongs to layer {stored_name!r}, config.json says {role.layer_name!r}",
                        member=weights_label,
                    )
            name = f"{role.canonical}.{param}"
            shape = tuple(int(d) for d in found["shape"])
            stored[name] = (shape, found["dtype"], path)
            if param == "weight":
                if len(shape) != 4:
                    raise SpecError(f"{path} has shape {list(shape)}, expected a 4-D HWIO kernel", member=weights_label)
                shape = (shape[3], shape[2], shape[0], shape[1])
            shapes[name] = shape
            paths[name] = path
            infos[name] = TensorInfo(name, shape, found["dtype"], source_name=path)
    check_tensors(spec, shapes, member=weights_label)
    conv_paths = set(paths.values())
    optimizer = 0
    for path in scan["datasets"]:
        rel = path.lstrip("/")
        if rel in conv_paths:
            continue
        if rel.startswith(f"{OPTIMIZER_GROUP}/"):
            optimizer += 1
            continue
        raise SpecError(f"weight file holds {rel!r}, which no layer of the network owns", member=weights_label)

    def load() -> dict[str, np.ndarray]:
        arrays = run_isolated(_read_weights, weights_bytes, paths, weights_label, member=weights_label)
        check_loaded(arrays, stored, weights_label)
        return {name: tf_to_canonical_array(name, arrays[name]) for name in paths}

    payload = {
        "kind": "keras",
        "member": member,
        "keras_version": metadata.get("keras_version"),
        "optimizer_tensors": optimizer,
        "layers": len(graph.layer_classes),
        "outputs": list(graph.outputs),
        "phase_scale": graph.phase_scale,
    }
    warnings = []
    if optimizer:
        warnings.append(f"{optimizer} optimizer tensors in {member} (training state; not needed for inference)")
    return ModelEntry(model_name, spec, LazyTensors(infos, load), infos, payload=payload, warnings=warnings,
                      reassembly_centring=graph.reassembly_centring)


def model_h5_scale(zf: SafeZip, member: str) -> float | None:
    """``model.h5``'s one root attribute ``intensity_scale``, or None: read by the pure metadata scan when it
    answers (:mod:`converters.tensorflow.weights_meta`), else by libhdf5 in the isolated child."""
    label = zf.member_label(member)
    data = zf.read(member, max_size=MAX_MODEL_H5)
    answered, value = scan_scale(data, label)
    return value if answered else run_isolated(_read_scale, data, label, member=label)


# -- libhdf5 work, run in a forked child by io.h5_isolated (plain data back) ---------------------------
def _scan_weights(weights_bytes: bytes, conv_paths: list[str], label: str) -> dict[str, Any]:
    """Shape, dtype and the group's ``name`` attribute of each conv variable; every dataset path."""
    h5 = open_h5(weights_bytes, member=label)
    try:
        convs: dict[str, Any] = {}
        for path in conv_paths:
            dset = get_dataset(h5, path, member=label)
            group_path = path.rsplit("/", 1)[0]
            stored = get_attr(h5[group_path], "name", member=label) if dict(CONV_VARS).get(path.rsplit("/", 1)[1]) == "weight" else None
            convs[path] = {"shape": [int(d) for d in dset.shape], "dtype": str(dset.dtype),
                           "name": None if stored is None else str(stored)}
        return {"convs": convs, "datasets": [path for path, _ in walk_datasets(h5, member=label)]}
    finally:
        h5.close()


def _read_weights(weights_bytes: bytes, paths: dict[str, str], label: str) -> dict[str, np.ndarray]:
    # these very bytes passed check_global_heaps when the archive was read (scan_weights or _scan_weights)
    f = open_h5(weights_bytes, member=label, checked=True)
    try:
        return {name: read_array(get_dataset(f, path, member=label), member=label) for name, path in paths.items()}
    finally:
        f.close()


def _read_scale(data: bytes, label: str) -> float | None:
    f = open_h5(data, member=label)
    try:
        value = get_attr(f, MODEL_H5_SCALE_ATTR, member=label)
        if value is None:
            return None
        arr = np.asarray(value)
        if arr.size != 1 or arr.dtype.kind not in "iuf":
            raise FormatError(f"intensity_scale attribute is {arr.dtype}{list(arr.shape)}, expected a number",
                              member=label, field=MODEL_H5_SCALE_ATTR)
        return float(arr.reshape(()))
    finally:
        f.close()


class TfModelManagerReader(EraReader):
    era = "tf-modelmanager-1"
    legacy_manifest_version = MANIFEST_VERSION
    backend = "tensorflow"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        return has_legacy_version(zf, hints, MANIFEST_VERSION)

    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        legacy = read_legacy_manifest(zf, {} if hints is None else hints)
        names = check_legacy_manifest(legacy, zf, MANIFEST_VERSION)
        models: dict[str, ModelEntry] = {}
        params_by_model: dict[str, dict[str, Any]] = {}
        warnings: list[str] = legacy_manifest_warnings(legacy)
        for name in names:
            for part in (PARAMS_MEMBER, KERAS_MEMBER):
                if model_member(name, part) not in zf:
                    raise FormatError(f"model {name!r} listed in {MANIFEST_MEMBER} has no {part}",
                                      member=zf.member_label(model_member(name, part)))
            pname = model_member(name, PARAMS_MEMBER)
            params = require_dict(read_pickle(zf, pname, defer_arrays=self.lazy_arrays), member=zf.member_label(pname),
                                  what=PARAMS_MEMBER)
            if "_version" in params:
                require_str(params["_version"], member=zf.member_label(pname), field="_version")
            opaque = opaque_names(params)
            if opaque:
                warnings.append(f"{pname} holds values of unknown type {opaque} (kept inert, never executed)")
            params_by_model[name] = params
            models[name] = read_keras_payload(zf, model_member(name, KERAS_MEMBER), model_name=name, params=params)
            objs_name = model_member(name, CUSTOM_OBJECTS_MEMBER)
            if objs_name in zf:
                models[name].payload["custom_objects"] = check_custom_objects(
                    read_pickle(zf, objs_name), member=zf.member_label(objs_name))
            if model_member(name, MODEL_H5_MEMBER) in zf:
                models[name].payload["model_h5_intensity_scale"] = model_h5_scale(zf, model_member(name, MODEL_H5_MEMBER))
        primary = primary_name(names)
        params = params_by_model[primary]
        primary_params = model_member(primary, PARAMS_MEMBER)
        for other, p in params_by_model.items():
            if other != primary and _params_differ(p, params):
                warnings.append(f"{model_member(other, PARAMS_MEMBER)} differs from {primary_params}")
        scale = positive_float(
            require_field(params, "intensity_scale", (int, float), member=zf.member_label(primary_params)),
            member=zf.member_label(primary_params),
            field="intensity_scale",
        )
        h5_scale = models[primary].payload.get("model_h5_intensity_scale")
        if h5_scale is not None and not abs(h5_scale - scale) <= 1e-8 + 1e-6 * abs(scale):  # np.isclose(rtol=1e-6)
            warnings.append(f"model.h5 intensity_scale {h5_scale} differs from params.dill {scale} (upstream reads params.dill)")
        probe = params.get("probe")
        if probe is not None and not is_array(probe):
            warnings.append("params.dill 'probe' is not an array the safe reader understands")
        return BridgeArchive(
            path=path,
            era=self.era,
            backend=self.backend,
            params=params,
            models=models,
            intensity_scale=scale,
            manifest=manifest_dict(names),
            warnings=warnings,
            members={m.name: m.size for m in zf.iter_members()},
        )



# -- params comparison ------------------------------------------------------------------------------
# Local on purpose: a format reader must not depend on an operation (``ops.diff``). Same notion of
# "differs" as ``diff`` at atol=0: key sets, nested dicts/lists/tuples, arrays by shape, dtype and
# whole content (NaN equal to NaN), exact types, floats with NaN equal to NaN.
def _comparable(value: Any) -> Any:
    """``value`` with the safe reader's inert objects (which compare by identity) as plain tuples."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_comparable(v) for v in value)
    if isinstance(value, Opaque):
        return ("<opaque>", value.type_name, value.kind)
    if isinstance(value, Record):
        return ("<record>", value.type_name, _comparable(value.fields))
    return value


def _arrays_differ(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return True
    if np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes():
        return False
    if a.dtype.kind not in "biufc":
        return True
    x = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)
    y = b.astype(x.dtype)

    def same(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (p == q) | (np.isnan(p) & np.isnan(q))

    equal = same(x.real, y.real) & same(x.imag, y.imag) if x.dtype.kind == "c" else same(x, y)
    return not bool(np.all(equal))


def _values_differ(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() != b.keys() or any(_values_differ(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and type(a) is type(b) and len(a) == len(b):
        return any(_values_differ(x, y) for x, y in zip(a, b))
    if is_array(a) or is_array(b):
        if not (is_array(a) and is_array(b)):
            return True
        if isinstance(a, DeferredArray) and isinstance(b, DeferredArray) and a.key is not None and a.key == b.key:
            return False  # built from the same bytes, shape, dtype and order: equal without building them
        return _arrays_differ(materialise_tree(a), materialise_tree(b))
    if type(a) is not type(b):
        return True
    if isinstance(a, float):
        return not (a == b or (math.isnan(a) and math.isnan(b)))
    return not (a == b)


def _params_differ(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two params snapshots differ at all (arrays by their whole content)."""
    return _values_differ(_comparable(a), _comparable(b))
