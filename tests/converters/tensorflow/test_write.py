"""converters/tensorflow_archive.py: TF-era members written without TensorFlow, checked against upstream's files.

The fixtures' ``diffraction_to_obj`` members were written by upstream's own ``ModelManager``; our
writer, given the same spec and tensors, must reproduce them: ``config.json``, ``model.weights.h5``,
``model.keras`` and ``model.h5`` byte for byte once the two provenance-only values are fed in (the
Python ``id()`` Keras records as ``shared_object_id``, and the save time). Configurations without a
fixture are checked three ways: the reader's graph analysis recovers the spec and the conv roles named
by the closed form of ``docs/upstream-architecture.md`` §1.7; the members read back bit-identically;
and, when Keras is installed, a Keras replica of upstream's factory (stub layers with upstream's
class names, modules and registered names) serialises to the same config and loads our ``model.keras``
the way upstream's loader does (``load_model`` → ``get_weights`` → ``set_weights`` into a fresh model).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import zipfile
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.tensorflow import write as ta
from converters.tensorflow.keras_graph import analyse_config
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safepickle import globals_in, load
from ptycho_bridge.spec.mapping import canonical_to_tf_array
from ptycho_bridge.spec.network import (
    NetworkSpec,
    expected_tensors,
    tf_padded_size,
    tf_spec,
)

TF_CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1")
D2O = "diffraction_to_obj"
SID = re.compile(rb'"shared_object_id": (\d+)')


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _normalise_ids(doc: Any) -> Any:
    """``doc`` with every ``shared_object_id`` replaced by 0, after checking there is one distinct id.

    Keras writes the Python ``id()`` of the float32 DTypePolicy the layers share: provenance only,
    it merely ties the configs together when loading. Nothing else is normalised.
    """
    raw = json.dumps(doc).encode()
    ids = set(SID.findall(raw))
    assert len(ids) == 1, f"expected one shared object id, found {ids}"
    return json.loads(SID.sub(b'"shared_object_id": 0', raw))


def _h5_tree(data: bytes) -> dict[str, Any]:
    """Every group/dataset: kind, attributes, and for datasets shape, dtype, layout and values."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name: str, obj: Any) -> None:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", attrs, obj.shape, str(obj.dtype), obj.chunks, obj.compression, obj[()])
            else:
                out[name] = ("group", attrs)
        f.visititems(visit)
        out["/"] = ("root", dict(f.attrs))
    return out


def _assert_same_tree(mine: dict[str, Any], theirs: dict[str, Any], *, values: bool = True) -> None:
    assert sorted(mine) == sorted(theirs)
    for path, item in theirs.items():
        got = mine[path]
        assert got[:-1] == item[:-1] if item[0] == "dataset" else got == item, path
        if item[0] == "dataset" and values:
            assert np.array_equal(got[-1], item[-1]), path
            assert got[-1].dtype == item[-1].dtype, path


def _equal_params(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for key, value in b.items():
        got = a[key]
        if isinstance(value, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == value.dtype and np.array_equal(got, value), key
        else:
            assert type(got) is type(value) and got == value, key


def _plain_zip(members: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _assert_same_model(arch: Any, spec: NetworkSpec, tensors: dict[str, np.ndarray]) -> None:
    entry = arch.models[D2O]
    assert entry.spec == spec
    got = dict(entry.tensors)
    assert sorted(got) == sorted(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name


def _random_tensors(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_tensors(spec).items()}


# --------------------------------------------------------------------------------------------------
# the three TF fixtures
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=TF_CASES)
def case(request: pytest.FixtureRequest, fixtures_dir: Path) -> dict[str, Any]:
    archive = fixtures_dir / request.param / "wts.h5.zip"
    arch = read_archive(archive)
    with zipfile.ZipFile(archive) as zf:
        members = {name: zf.read(name) for name in zf.namelist() if name.startswith(f"{D2O}/")}
    with zipfile.ZipFile(io.BytesIO(members[f"{D2O}/model.keras"])) as kz:
        keras_infos = kz.infolist()
        inner = {i.filename: kz.read(i.filename) for i in keras_infos}
    metadata = json.loads(inner["metadata.json"])
    return {
        "name": request.param,
        "arch": arch,
        "spec": arch.primary.spec,
        "tensors": dict(arch.primary.tensors),
        "members": members,
        "keras_infos": keras_infos,
        "inner": inner,
        "sid": int(SID.search(inner["config.json"]).group(1)),
        "saved_at": datetime.strptime(metadata["date_saved"], "%Y-%m-%d@%H:%M:%S"),
        "params": load(members[f"{D2O}/params.dill"], member="params.dill"),
    }


def test_config_json_equals_upstream(case: dict[str, Any]) -> None:
    fixture = json.loads(case["inner"]["config.json"])
    mine = ta.keras_config(case["spec"])
    assert _normalise_ids(mine) == _normalise_ids(fixture)
    # with the fixture's id, the serialised bytes are upstream's bytes (same key order, same separators)
    exact = ta.config_json_bytes(ta.keras_config(case["spec"], shared_object_id=case["sid"]))
    assert exact == case["inner"]["config.json"]


def test_weights_h5_layout_and_values_equal_upstream(case: dict[str, Any]) -> None:
    config = ta.keras_config(case["spec"], shared_object_id=case["sid"])
    mine = ta.model_weights_h5(case["spec"], case["tensors"], config)
    theirs = case["inner"]["model.weights.h5"]
    assert not any(p.startswith("optimizer") for p in _h5_tree(theirs))  # d2o is never compiled
    _assert_same_tree(_h5_tree(mine), _h5_tree(theirs))  # groups, `name` attrs, shapes, dtypes, values
    assert mine == theirs  # Keras' creation order too: the HDF5 image is identical


def test_model_keras_zip_equals_upstream(case: dict[str, Any]) -> None:
    data = ta.model_keras_bytes(case["spec"], case["tensors"], saved_at=case["saved_at"], shared_object_id=case["sid"])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    fields = ("filename", "compress_type", "external_attr", "create_system", "flag_bits")
    assert [tuple(getattr(i, f) for f in fields) for i in infos] == [tuple(getattr(i, f) for f in fields) for i in case["keras_infos"]]
    assert [i.date_time for i in infos] == [i.date_time for i in case["keras_infos"]]
    assert data == case["members"][f"{D2O}/model.keras"]
    # the default (deterministic) save time only changes metadata.json and one zip timestamp
    default = ta.model_keras_bytes(case["spec"], case["tensors"], shared_object_id=case["sid"])
    with zipfile.ZipFile(io.BytesIO(default)) as zf:
        assert json.loads(zf.read("metadata.json"))["keras_version"] == "3.15.1"
        assert zf.read("model.weights.h5") == case["inner"]["model.weights.h5"]


def test_model_h5_equals_upstream(case: dict[str, Any]) -> None:
    import h5py

    data = ta.model_h5_bytes(case["arch"].intensity_scale)
    assert data == case["members"][f"{D2O}/model.h5"]
    with h5py.File(io.BytesIO(data), "r") as f:
        assert list(f) == [] and list(f.attrs) == ["intensity_scale"]
        assert f.attrs["intensity_scale"].dtype == np.float64


def test_params_dill_matches_upstream_params(case: dict[str, Any]) -> None:
    members = ta.tf_legacy_members(case["spec"], case["tensors"], case["arch"].params, case["arch"].intensity_scale)
    ours = members[f"{D2O}/params.dill"]
    # our own output: plain data whose only globals are numpy's array reconstructors
    assert {m for m, _ in globals_in(ours, "params.dill")} <= {"numpy", "numpy._core.multiarray"}
    dill = pytest.importorskip("dill")
    for loads in (pickle.loads, dill.loads):
        _equal_params(loads(ours), case["params"])
    _equal_params(load(ours, member="params.dill"), case["params"])
    assert case["params"]["_version"] == "1.0" and isinstance(case["params"]["probe"], np.ndarray)


def test_manifest_and_custom_objects_are_plain(case: dict[str, Any]) -> None:
    members = ta.tf_legacy_members(case["spec"], case["tensors"], case["arch"].params, case["arch"].intensity_scale)
    assert sorted(members) == sorted(["manifest.dill"] + [f"{D2O}/{m}" for m in
                                      ("custom_objects.dill", "model.keras", "model.h5", "params.dill")])
    assert pickle.loads(members["manifest.dill"]) == {"models": [D2O], "version": "1.0"}
    assert pickle.loads(members[f"{D2O}/custom_objects.dill"]) == {}
    for name in ("manifest.dill", f"{D2O}/custom_objects.dill"):
        assert members[name][:2] == b"\x80\x04" and globals_in(members[name], name) == []
    again = ta.tf_legacy_members(case["spec"], case["tensors"], case["arch"].params, case["arch"].intensity_scale)
    assert again == members  # deterministic


def test_legacy_zip_reads_back_identically(case: dict[str, Any], tmp_path: Path) -> None:
    members = ta.tf_legacy_members(case["spec"], case["tensors"], case["arch"].params, case["arch"].intensity_scale)
    arch = read_archive(_plain_zip(members, tmp_path / "wts.h5.zip"))
    assert arch.era == "tf-modelmanager-1" and arch.warnings == []
    _assert_same_model(arch, case["spec"], case["tensors"])
    assert arch.intensity_scale == case["arch"].intensity_scale
    _equal_params(arch.params, case["params"])
    assert arch.models[D2O].payload["model_h5_intensity_scale"] == case["arch"].intensity_scale


def test_bridge_archive_carries_loadable_legacy_members(case: dict[str, Any], tmp_path: Path) -> None:
    legacy = ta.tf_legacy_members(case["spec"], case["tensors"], case["arch"].params, case["arch"].intensity_scale)
    path = write_archive(
        tmp_path / "wts.h5.zip", backend="tensorflow", source_era="tf-modelmanager-1",
        models={D2O: ModelToWrite(case["spec"], case["tensors"], "keras", f"{D2O}/model.keras")},
        params=case["arch"].params, intensity_scale=case["arch"].intensity_scale, legacy_members=legacy,
    )
    bridge = read_archive(path)
    assert bridge.era == "bridge-2" and bridge.backend == "tensorflow"
    _assert_same_model(bridge, case["spec"], case["tensors"])
    # what upstream's loader reads from the same archive: the legacy members alone, via the TF-era reader
    with zipfile.ZipFile(path) as zf:
        kept = {name: zf.read(name) for name in legacy}
    assert kept == legacy
    _assert_same_model(read_archive(_plain_zip(kept, tmp_path / "legacy.zip")), case["spec"], case["tensors"])


# --------------------------------------------------------------------------------------------------
# configurations without a fixture
# --------------------------------------------------------------------------------------------------
VARIANTS = {
    "pad_object_false": dict(N=64, gridsize=1, n_filters_scale=2, pad_object=False),
    "probe_big_false": dict(N=64, gridsize=1, n_filters_scale=2, probe_big=False),
    "object_big_false": dict(N=64, gridsize=1, n_filters_scale=1, object_big=False),
    "gs2_object_big_false_probe_small": dict(N=64, gridsize=2, n_filters_scale=1, object_big=False, probe_big=False),
    "N128_gs2": dict(N=128, gridsize=2, n_filters_scale=2),
    "N128_gs1_no_pad_no_big": dict(N=128, gridsize=1, n_filters_scale=1, pad_object=False, object_big=False),
    "N256_gs1": dict(N=256, gridsize=1, n_filters_scale=1),
    "N256_gs2_probe_small": dict(N=256, gridsize=2, n_filters_scale=1, probe_big=False),
    "swish": dict(N=64, gridsize=1, n_filters_scale=1, amp_activation="swish"),
    "softplus_gs2": dict(N=64, gridsize=2, n_filters_scale=1, amp_activation="softplus"),
    "relu_pad_false": dict(N=64, gridsize=1, n_filters_scale=1, amp_activation="relu", pad_object=False),
}


def _variant_spec(kw: dict[str, Any]) -> NetworkSpec:
    args = dict(object_big=True, probe_big=True, pad_object=True, amp_activation="sigmoid") | kw
    return tf_spec(**args, padded_size=tf_padded_size(args["N"], args["gridsize"], 4, 10))


def _closed_form_names(spec: NetworkSpec) -> dict[str, str]:
    """docs/upstream-architecture.md §1.7: canonical conv prefix → Keras layer name ``conv2d_k``."""
    E, D = spec.n_encoder_blocks, spec.n_decoder_blocks
    X = 2 if (spec.pad_object and spec.probe_big) or not spec.pad_object else 0
    k: dict[str, int] = {}
    for b in range(E):
        k[f"encoder.{b}.conv1"], k[f"encoder.{b}.conv2"] = 2 * b, 2 * b + 1
    for h, head in enumerate(("amp", "phase")):
        base = 2 * E + h * (2 * D + 2 + X)
        for d in range(D):
            k[f"{head}.decoder.{d}.conv1"], k[f"{head}.decoder.{d}.conv2"] = base + 2 + 2 * d, base + 3 + 2 * d
        if spec.pad_object:
            k[f"{head}.conv1"] = base
        if spec.probe_big or not spec.pad_object:
            k[f"{head}.conv2"] = base + 1
            k[f"{head}.outer.conv1"], k[f"{head}.outer.conv2"] = base + 2 + 2 * D, base + 3 + 2 * D
    return {role: ("conv2d" if n == 0 else f"conv2d_{n}") for role, n in k.items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_config_analyses_back_to_the_spec(variant: str) -> None:
    spec = _variant_spec(VARIANTS[variant])
    config = ta.keras_config(spec)
    graph = analyse_config(config, member="config.json")
    assert (graph.N, graph.channels, graph.n_filters_scale) == (spec.N, spec.channels_in, spec.n_filters_scale)
    assert (graph.object_big, graph.pad_object, graph.outer_branch) == (spec.object_big, spec.pad_object, spec.outer_tensors)
    assert (graph.amp_activation, graph.phase_scale, graph.use_polar) == (spec.amp_activation, math.pi, True)
    assert graph.padded_size == (spec.padded_size if spec.object_big else None)
    assert graph.inputs == ("input", "input_positions") and graph.outputs == ("trimmed_obj",)
    roles = {r.canonical: r.layer_name for r in graph.convs}
    assert roles == _closed_form_names(spec)
    assert {f"{c}.weight" for c in roles} == {k for k in expected_tensors(spec) if k.endswith(".weight")}
    conv_order = [l["name"] for l in config["config"]["layers"] if l["class_name"] == "Conv2D"]
    assert [r.alias for r in sorted(graph.convs, key=lambda r: conv_order.index(r.layer_name))] == [
        "conv2d" if i == 0 else f"conv2d_{i}" for i in range(len(conv_order))]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_members_read_back_identically(variant: str, tmp_path: Path) -> None:
    spec = _variant_spec(VARIANTS[variant])
    tensors = _random_tensors(spec)
    members = ta.tf_legacy_members(spec, tensors, {}, 123.5)
    arch = read_archive(_plain_zip(members, tmp_path / "wts.h5.zip"))
    # PadReconstructionLayer's config does not record padded_size: the reader then has none
    _assert_same_model(arch, spec if spec.object_big else replace(spec, padded_size=None), tensors)
    params = pickle.loads(members[f"{D2O}/params.dill"])
    assert params["intensity_scale"] == 123.5 and params["_version"] == "1.0"
    assert (params["N"], params["gridsize"], params["object.big"], params["pad_object"]) == (
        spec.N, spec.gridsize, spec.object_big, spec.pad_object)
    assert tf_padded_size(spec.N, spec.gridsize, params["offset"], params["max_position_jitter"]) == spec.padded_size


def test_torch_params_are_accepted_for_a_tf_expressible_spec() -> None:
    spec = _variant_spec(dict(N=64, gridsize=2, n_filters_scale=1, amp_activation="swish"))
    params = {"N": 64, "gridsize": 2, "amp_activation": "silu", "n_images": None, "_version": "2.0-pytorch"}
    out = ta.tf_params(spec, params, 10.0)
    assert out["amp_activation"] == "swish" and out["_version"] == "1.0" and out["n_images"] is None
    assert (out["offset"], out["max_position_jitter"]) == (4, 10)


def test_refusals_name_the_field() -> None:
    spec = _variant_spec(dict(N=128, gridsize=2, n_filters_scale=1))
    torch_like = replace(spec, outer_width=32, cbam_encoder=False)  # torch's outer width at N=128
    with pytest.raises(ConversionRefused) as exc:
        ta.keras_config(torch_like)
    assert exc.value.field == "outer_width"
    with pytest.raises(ConversionRefused) as exc:
        ta.keras_config(replace(spec, cbam_encoder=True))
    assert exc.value.field == "cbam_encoder"
    with pytest.raises(ConversionRefused) as exc:
        ta.keras_config(replace(spec, c_outer=4, channels_in=1))
    assert exc.value.field == "channels_in"
    with pytest.raises(ConversionRefused):
        ta.tf_legacy_members(spec, _random_tensors(spec), {}, 1.0, models=("autoencoder",))
    with pytest.raises(SpecError) as serr:
        ta.tf_params(spec, {"n_filters_scale": 2}, 1.0)
    assert serr.value.field == "n_filters_scale"
    with pytest.raises(SpecError) as serr:
        ta.tf_params(spec, {"offset": 5}, 1.0)  # 128 + 5 + 10 ≠ 142
    assert serr.value.field == "padded_size"
    with pytest.raises(SpecError):
        ta.keras_config(replace(spec, padded_size=None))
    tensors = _random_tensors(spec)
    tensors.pop("phase.conv2.bias")
    with pytest.raises(SpecError, match="phase.conv2.bias"):
        ta.model_keras_bytes(spec, tensors)
    with pytest.raises(ConversionRefused):
        ta.tf_params(spec, {"probe": object()}, 1.0)


# --------------------------------------------------------------------------------------------------
# Keras itself (optional): a replica of upstream's factory with stub layers
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _replica() -> Any:
    """Upstream's factory (model.py: create_model_with_gridsize → create_autoencoder …) over stub layers
    that carry upstream's class names, modules, registered names and get_config keys, so Keras' own
    naming, ordering and serialisation produce what upstream's would. Math is irrelevant here."""
    keras = pytest.importorskip("keras")
    from keras import layers

    def stub(name: str, module: str, keys: tuple[tuple[str, Any], ...] = (), out: Any = None, register: bool = True) -> type:
        def __init__(self: Any, **kw: Any) -> None:
            vals = {k: kw.pop(k, d) for k, d in keys}
            if name in ("IntensityScaler", "CombineComplexLayer"):
                kw.pop("dtype", None)
            layers.Layer.__init__(self, **kw)
            self._cfg = vals
            if name == "CenterMaskLayer":
                self.zero_pad = layers.ZeroPadding2D((vals["N"] // 4, vals["N"] // 4))

        def get_config(self: Any) -> dict[str, Any]:
            return {**layers.Layer.get_config(self), **self._cfg}

        def compute_output_spec(self: Any, x: Any, *a: Any, **k: Any) -> Any:
            first = x
            while isinstance(first, (list, tuple)):
                first = first[0]
            shape, dtype = out(self, first) if out else (first.shape, first.dtype)
            return keras.KerasTensor(shape, dtype=dtype)

        cls = type(name, (layers.Layer,), {"__init__": __init__, "get_config": get_config, "call": lambda self, x: x,
                                           "compute_output_spec": compute_output_spec, "__module__": module})
        return keras.saving.register_keras_serializable(package="ptycho")(cls) if register else cls

    def canvas(self: Any, t: Any) -> tuple[Any, str]:
        P = self._cfg.get("padded_size") or self._cfg.get("output_size") or stubs.padded
        return (t.shape[0], P, P, t.shape[-1]), "complex64"

    stubs = type("Stubs", (), {})()
    stubs.padded = 0
    stubs.IntensityScaler = stub("IntensityScaler", "ptycho.model")
    stubs.ActivationLayer = stub("ActivationLayer", "ptycho.custom_layers", (("activation_name", "sigmoid"), ("scale", 1.0)))
    stubs.CombineComplexLayer = stub("CombineComplexLayer", "ptycho.custom_layers", (("use_polar", True),))
    stubs.Reassemble = stub("ReassemblePatchesLayer", "ptycho.custom_layers",
                            (("padded_size", None), ("N", None), ("gridsize", None)), canvas)
    stubs.PadRec = stub("PadReconstructionLayer", "ptycho.custom_layers", (), canvas)
    stubs.Trim = stub("TrimReconstructionLayer", "ptycho.custom_layers", (("output_size", None),), canvas)
    stubs.CenterMask = stub("CenterMaskLayer", "ptycho.tf_helper", (("N", None), ("c", 1), ("kind", "center")),
                            lambda self, t: ((t.shape[0], t.shape[1], t.shape[2], 1), t.dtype), register=False)

    def up_block(x: Any, n: int) -> Any:
        x = layers.Conv2D(n, (3, 3), activation="relu", padding="same", data_format="channels_last")(x)
        x = layers.Conv2D(n, (3, 3), activation="relu", padding="same", data_format="channels_last")(x)
        return layers.UpSampling2D((2, 2), data_format="channels_last")(x)

    def build(spec: NetworkSpec) -> Any:
        keras.backend.clear_session()
        stubs.padded = spec.padded_size
        N, C, nfs = spec.N, spec.channels_in, spec.n_filters_scale
        image = keras.Input(shape=(N, N, C), name="input")
        positions = keras.Input(shape=(1, 2, C), name="input_positions")
        x = stubs.IntensityScaler(name="intensity_scaler")([image])
        for f in [nfs * (2048 // N) * 2**i for i in range(spec.n_encoder_blocks)]:
            x = layers.Conv2D(f, (3, 3), activation="relu", padding="same")(x)
            x = layers.Conv2D(f, (3, 3), activation="relu", padding="same")(x)
            x = layers.MaxPool2D((2, 2), padding="same")(x)

        def head(h: Any, which: str) -> Any:
            nf = C if spec.object_big else 1
            conv1 = layers.Conv2D(nf, (3, 3), padding="same")
            conv2 = layers.Conv2D(nf, (3, 3), padding="same")
            act = (stubs.ActivationLayer(activation_name=spec.amp_activation, name="amp") if which == "amp"
                   else stubs.ActivationLayer(activation_name="tanh", scale=math.pi, name="phi"))
            for f in spec.decoder_widths:
                h = up_block(h, f)
            if not spec.pad_object:
                return act(conv2(up_block(h, nfs * (2048 // N))))
            x1 = layers.ZeroPadding2D((N // 4, N // 4), name=("amp" if which == "amp" else "phase") + "_padded")(act(conv1(h[..., :-4])))
            if not spec.probe_big:
                return x1
            x2 = keras.activations.swish(conv2(up_block(h[..., -4:], nfs * (2048 // N))))
            return x1 + x2 * stubs.CenterMask(N=N, c=1, kind="border")(x2)

        obj = stubs.CombineComplexLayer(name="obj")([head(x, "amp"), head(x, "phase")])
        if spec.object_big:
            padded = stubs.Reassemble(padded_size=spec.padded_size, N=N, gridsize=spec.gridsize, dtype="complex64",
                                      name="padded_obj_2")([obj, positions])
        else:
            padded = stubs.PadRec(dtype="complex64", name="padded_obj_2")(obj)
        trimmed = stubs.Trim(output_size=N, dtype="complex64", name="trimmed_obj")(padded)
        keras.Model([image, positions], [trimmed])  # upstream's autoencoder comes first ("functional")
        return keras.Model(inputs=[image, positions], outputs=[trimmed])

    stubs.build = build
    stubs.keras = keras
    return stubs


KERAS_VARIANTS = ("pad_object_false", "gs2_object_big_false_probe_small", "N128_gs1_no_pad_no_big", "N256_gs2_probe_small",
                  "softplus_gs2")


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'center_mask_layer:UserWarning")
@pytest.mark.parametrize("variant", KERAS_VARIANTS)
def test_keras_replica_serialises_like_our_writer(variant: str, tmp_path: Path) -> None:
    stubs = _replica()
    spec = _variant_spec(VARIANTS[variant])
    model = stubs.build(spec)
    model.save(tmp_path / "replica.keras")
    with zipfile.ZipFile(tmp_path / "replica.keras") as zf:
        config, weights = json.loads(zf.read("config.json")), zf.read("model.weights.h5")
    assert _normalise_ids(config) == _normalise_ids(ta.keras_config(spec))
    mine = ta.model_weights_h5(spec, _random_tensors(spec), ta.keras_config(spec))
    _assert_same_tree(_h5_tree(mine), _h5_tree(weights), values=False)  # values: Keras' random init


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'center_mask_layer:UserWarning")
@pytest.mark.parametrize("variant", ("object_big_false", "N128_gs2"))
def test_keras_loads_our_model_keras_like_upstreams_loader(variant: str, tmp_path: Path) -> None:
    stubs = _replica()
    spec = _variant_spec(VARIANTS[variant])
    tensors = _random_tensors(spec, seed=1)
    path = tmp_path / "model.keras"
    path.write_bytes(ta.model_keras_bytes(spec, tensors))
    # upstream: load_model(model.keras, custom_objects) then blank.set_weights(loaded.get_weights())
    loaded = stubs.keras.saving.load_model(path, custom_objects={"CenterMaskLayer": stubs.CenterMask})
    got = loaded.get_weights()
    roles = {r.layer_name: r.canonical for r in analyse_config(ta.keras_config(spec), member="config.json").convs}
    convs = [l.name for l in loaded.layers if l.__class__.__name__ == "Conv2D"]
    want = [canonical_to_tf_array(f"{roles[n]}.{p}", tensors[f"{roles[n]}.{p}"]) for n in convs for p in ("weight", "bias")]
    assert len(got) == len(want) == 2 * len(roles)
    assert all(g.shape == w.shape and np.array_equal(g, w) for g, w in zip(got, want))
    blank = stubs.build(spec)
    blank.set_weights(got)  # positional: raises on any shape mismatch
    assert [l.name for l in blank.layers] == [l.name for l in loaded.layers]
