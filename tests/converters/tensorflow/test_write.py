"""converters/tensorflow/write.py: TF-era members written without TensorFlow, checked against upstream's files.

The fixtures' ``diffraction_to_obj`` members were written by upstream's own ``ModelManager``; our
writer, given the same spec and tensors, must reproduce them: ``model.weights.h5``, ``model.keras``
and ``model.h5`` byte for byte once the two provenance-only values are fed in (the Python ``id()``
Keras records as ``shared_object_id``, and the save time); ``params.dill`` to equal upstream's params.
Every fixture and every configuration without a fixture must read back bit-identically: spec, params
and every tensor (``test_legacy_zip_reads_back_identically`` is the fixture round trip
read → ``tf_legacy_members`` → read). The config itself is tested in ``test_keras_config.py``.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.tensorflow import keras_config as kc
from converters.tensorflow import write as ta
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safepickle import globals_in, load
from ptycho_bridge.spec.network import NetworkSpec, tf_padded_size
from tests._support import TF_CASES, zip_of
from tests.converters.tensorflow.cases import (
    D2O,
    SID,
    VARIANTS,
    assert_same_tree,
    h5_tree,
    random_tensors,
    variant_spec,
)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _equal_params(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for key, value in b.items():
        got = a[key]
        if isinstance(value, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == value.dtype and np.array_equal(got, value), key
        else:
            assert type(got) is type(value) and got == value, key


def _assert_same_model(arch: Any, spec: NetworkSpec, tensors: dict[str, np.ndarray]) -> None:
    entry = arch.models[D2O]
    assert entry.spec == spec
    got = dict(entry.tensors)
    assert sorted(got) == sorted(tensors)
    for name, value in tensors.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name


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


def test_weights_h5_layout_and_values_equal_upstream(case: dict[str, Any]) -> None:
    config = kc.keras_config(case["spec"], shared_object_id=case["sid"])
    mine = ta.model_weights_h5(case["spec"], case["tensors"], config)
    theirs = case["inner"]["model.weights.h5"]
    assert not any(p.startswith("optimizer") for p in h5_tree(theirs))  # d2o is never compiled
    assert_same_tree(h5_tree(mine), h5_tree(theirs))  # groups, `name` attrs, shapes, dtypes, values
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
    arch = read_archive(zip_of(members, tmp_path / "wts.h5.zip"))
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
    _assert_same_model(read_archive(zip_of(kept, tmp_path / "legacy.zip")), case["spec"], case["tensors"])


# --------------------------------------------------------------------------------------------------
# configurations without a fixture
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_members_read_back_identically(variant: str, tmp_path: Path) -> None:
    spec = variant_spec(VARIANTS[variant])
    tensors = random_tensors(spec)
    members = ta.tf_legacy_members(spec, tensors, {}, 123.5)
    arch = read_archive(zip_of(members, tmp_path / "wts.h5.zip"))
    # PadReconstructionLayer's config does not record padded_size: the reader then has none
    _assert_same_model(arch, spec if spec.object_big else replace(spec, padded_size=None), tensors)
    params = pickle.loads(members[f"{D2O}/params.dill"])
    assert params["intensity_scale"] == 123.5 and params["_version"] == "1.0"
    assert (params["N"], params["gridsize"], params["object.big"], params["pad_object"]) == (
        spec.N, spec.gridsize, spec.object_big, spec.pad_object)
    assert tf_padded_size(spec.N, spec.gridsize, params["offset"], params["max_position_jitter"]) == spec.padded_size


def test_torch_params_are_accepted_for_a_tf_expressible_spec() -> None:
    spec = variant_spec(dict(N=64, gridsize=2, n_filters_scale=1, amp_activation="swish"))
    params = {"N": 64, "gridsize": 2, "amp_activation": "silu", "n_images": None, "_version": "2.0-pytorch"}
    out = ta.tf_params(spec, params, 10.0)
    assert out["amp_activation"] == "swish" and out["_version"] == "1.0" and out["n_images"] is None
    assert (out["offset"], out["max_position_jitter"]) == (4, 10)


def test_refusals_name_the_field() -> None:
    """The writer's own refusals (the config's, which it inherits, are in test_keras_config.py)."""
    spec = variant_spec(dict(N=128, gridsize=2, n_filters_scale=1))
    with pytest.raises(ConversionRefused):
        ta.tf_legacy_members(spec, random_tensors(spec), {}, 1.0, models=())
    with pytest.raises(ConversionRefused):
        ta.model_keras_bytes(replace(spec, cbam_encoder=True), random_tensors(spec))
    with pytest.raises(ConversionRefused):
        ta.tf_legacy_members(spec, random_tensors(spec), {}, 1.0, models=("autoencoder",))
    with pytest.raises(SpecError) as serr:
        ta.tf_params(spec, {"n_filters_scale": 2}, 1.0)
    assert serr.value.field == "n_filters_scale"
    with pytest.raises(SpecError) as serr:
        ta.tf_params(spec, {"offset": 5}, 1.0)  # 128 + 5 + 10 ≠ 142
    assert serr.value.field == "padded_size"
    tensors = random_tensors(spec)
    tensors.pop("phase.conv2.bias")
    with pytest.raises(SpecError, match="phase.conv2.bias"):
        ta.model_keras_bytes(spec, tensors)
    with pytest.raises(ConversionRefused):
        ta.tf_params(spec, {"probe": object()}, 1.0)


