"""Write TF-era (``tf-modelmanager-1``) legacy members without TensorFlow.

Why: Ptychodus opens ``wts.h5.zip`` through upstream's ``ModelManager.load_multiple_models``, which
reads ``manifest.dill``, then per listed model ``params.dill`` (into ``params.cfg``) and
``model.keras``: Keras deserialises ``config.json`` with upstream's registered layer classes, loads
``model.weights.h5`` into it, and the loader copies ``get_weights()`` *positionally* into a freshly
built upstream model (``set_weights``). Writing those members is therefore a matter of reproducing
upstream's Keras graph exactly (:mod:`converters.tensorflow.keras_config`) and the archive around it
— weight-file groups, the ``model.keras`` zip, ``params.dill`` — which this module does from a
:class:`NetworkSpec` and canonical tensors, importing neither TensorFlow nor Keras. Member names,
versions and defaults come from :mod:`converters.tensorflow.layout`, shared with the reader.

- **Weight groups** are ``layers/<alias>/vars`` where the alias is the snake-cased class name with a
  per-class counter over ``model.layers`` (Keras ``_save_container_state``); every layer gets a group
  (with a ``name`` attribute) even without weights, as does a layer's sub-layer (``CenterMaskLayer``
  owns a ``zero_pad``). Conv roles come from :func:`converters.tensorflow.keras_graph.analyse_config` —
  the same code the reader uses — so what we write reads back through one path.

Not written: the ``autoencoder`` model. Its ``config.json`` compiles with upstream's
``realspace_loss``/``negloglik``, which Keras can only resolve through a ``custom_objects.dill``
holding by-reference globals — not plain data. Upstream's loader loads only the models the manifest
lists, and Ptychodus uses ``diffraction_to_obj``.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from collections import defaultdict
from datetime import datetime
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.keras_config import (
    DEFAULT_SHARED_OBJECT_ID,
    config_json_bytes,
    keras_config,
    numbered,
    to_snake_case,
)
from converters.tensorflow.keras_graph import analyse_config
from converters.tensorflow.layout import (
    CONV_VARS,
    CUSTOM_OBJECTS_MEMBER,
    KERAS_CONFIG,
    KERAS_DATE_FORMAT,
    KERAS_MEMBER,
    KERAS_METADATA,
    KERAS_OP_MODULE_PREFIX,
    KERAS_VERSION,
    KERAS_WEIGHTS,
    KERAS_ZIP_FIXED_DATE,
    MANIFEST_MEMBER,
    MODEL_H5_MEMBER,
    MODEL_H5_SCALE_ATTR,
    PARAMS_MEMBER,
    PARAMS_VERSION,
    PICKLE_PROTOCOL,
    SUPPORTED_MODELS,
    TF_DEFAULT_JITTER,
    TF_DEFAULT_OFFSET,
    VARS,
    WEIGHT_SUBLAYERS,
    default_padded_size,
    layer_group,
    manifest_dict,
    model_member,
)
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.spec.mapping import canonical_to_tf_array
from ptycho_bridge.spec.network import (
    NetworkSpec,
    check_tensors,
    torch_amp_activation,
)

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


def _weight_groups(config: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(h5 path, layer name, Conv2D layer name or None) for every group Keras' saver creates, in its order."""
    layers = config["config"]["layers"]
    used: defaultdict[str, int] = defaultdict(int)
    sub_count: defaultdict[str, int] = defaultdict(int)
    out: list[tuple[str, str, str | None]] = []
    for layer in layers:
        if str(layer.get("module", "")).startswith(KERAS_OP_MODULE_PREFIX):
            continue  # keras ops are not Layers: no group, no alias
        cls = layer["class_name"]
        base = to_snake_case(cls)
        alias = numbered(base, used[base])
        used[base] += 1
        out.append((layer_group(alias), layer["name"], layer["name"] if cls == "Conv2D" else None))
        for attr, sub_cls in WEIGHT_SUBLAYERS.get(cls, ()):
            sub_base = to_snake_case(sub_cls)
            out.append((f"{layer_group(alias)}/{attr}", numbered(sub_base, sub_count[sub_base]), None))
            sub_count[sub_base] += 1
    return out


def model_weights_h5(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> bytes:
    """``model.weights.h5`` for ``config``: Keras' group layout and creation order, kernels HWIO.

    Conv roles (canonical name ↔ layer) come from :func:`analyse_config`, as when reading. Tensors must
    match the spec exactly (missing, extra or mis-shaped → :class:`SpecError`).
    """
    import h5py

    member = KERAS_WEIGHTS
    graph = analyse_config(dict(config), member=KERAS_CONFIG)
    for field_name, have, want in (
        ("N", graph.N, spec.N), ("channels_in", graph.channels, spec.channels_in),
        ("n_filters_scale", graph.n_filters_scale, spec.n_filters_scale), ("object_big", graph.object_big, spec.object_big),
        ("pad_object", graph.pad_object, spec.pad_object), ("outer_tensors", graph.outer_branch, spec.outer_tensors),
    ):
        if have != want:
            raise SpecError(f"{KERAS_CONFIG} says {have!r}, the network spec {want!r}", member=member, field=field_name)
    check_tensors(spec, {k: tuple(np.shape(v)) for k, v in tensors.items()}, member=member, allow_extra_prefixes=())
    role_of = {r.layer_name: r.canonical for r in graph.convs}

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        # Keras' _save_state: the model's own (empty) group first, then model.layers in order,
        # each layer's group before its sub-layers'.
        f.create_group(VARS).attrs["name"] = config["config"]["name"]
        for path, name, conv in _weight_groups(config):
            group = f.create_group(path).create_group(VARS)
            group.attrs["name"] = name
            if conv is None:
                continue
            canonical = role_of[conv]
            for index, param in CONV_VARS:
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
    reassembly_centring: bool = True,
) -> bytes:
    """``model.keras``: a stored zip of ``metadata.json``, ``config.json``, ``model.weights.h5`` as Keras writes it."""
    config = keras_config(spec, padded_size=padded_size, shared_object_id=shared_object_id,
                          reassembly_centring=reassembly_centring)
    weights = model_weights_h5(spec, tensors, config)
    metadata = json.dumps({"keras_version": KERAS_VERSION, "date_saved": saved_at.strftime(KERAS_DATE_FORMAT)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_zip_info(KERAS_METADATA, KERAS_ZIP_FIXED_DATE), metadata.encode("utf-8"))
        zf.writestr(_zip_info(KERAS_CONFIG, KERAS_ZIP_FIXED_DATE), config_json_bytes(config))
        zf.writestr(_zip_info(KERAS_WEIGHTS, saved_at.timetuple()[:6]), weights)
    return buf.getvalue()


def model_h5_bytes(intensity_scale: float) -> bytes:
    """``model.h5``: an HDF5 file with one root attribute ``intensity_scale`` (float64); upstream never reads it."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs[MODEL_H5_SCALE_ATTR] = float(intensity_scale)
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
            raise SpecError(f"params says {out[key]!r} but the network spec says {want!r}", member=PARAMS_MEMBER, field=key)
        out.setdefault(key, want)
    out.setdefault("offset", TF_DEFAULT_OFFSET)
    out.setdefault("max_position_jitter", TF_DEFAULT_JITTER)
    derived = default_padded_size(spec.N, spec.gridsize, out)
    target = padded_size if padded_size is not None else spec.padded_size
    if target is not None and target != derived:
        raise SpecError(
            f"N + (gridsize-1)·offset + max_position_jitter = {derived} but the network's padded_size is {target}",
            member=PARAMS_MEMBER, field="padded_size",
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
    reassembly_centring: bool = True,
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

    The network is written as ``spec`` says, earlier upstream variants included (a one-channel amplitude head,
    ``reassembly_centring=False``, ``use_polar=False``); callers that want what *today's* upstream loader
    opens pass :func:`ptycho_bridge.spec.history.today_form` of it.
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
        padded = default_padded_size(spec.N, spec.gridsize, params)
    cfg = tf_params(spec, params, intensity_scale, padded_size=padded)
    params_bytes = pickle.dumps(cfg, protocol=PICKLE_PROTOCOL)
    keras_bytes = model_keras_bytes(spec, tensors, padded_size=padded, saved_at=saved_at,
                                    reassembly_centring=reassembly_centring)
    members: dict[str, bytes] = {MANIFEST_MEMBER: pickle.dumps(manifest_dict(list(models)), protocol=PICKLE_PROTOCOL)}
    for name in models:
        members[model_member(name, CUSTOM_OBJECTS_MEMBER)] = pickle.dumps({}, protocol=PICKLE_PROTOCOL)
        members[model_member(name, KERAS_MEMBER)] = keras_bytes
        members[model_member(name, MODEL_H5_MEMBER)] = model_h5_bytes(cfg["intensity_scale"])
        members[model_member(name, PARAMS_MEMBER)] = params_bytes
    return members
