"""converters/tensorflow/layout.py: the format's facts, checked against upstream's own archives."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest

from converters.tensorflow import layout as L
from ptycho_bridge.io.safepickle import load
from ptycho_bridge.spec.network import tf_padded_size
from tests._support import TF_CASES


@pytest.mark.parametrize("name", TF_CASES)
def test_constants_match_upstreams_archives(name: str, fixtures_dir: Path) -> None:
    with zipfile.ZipFile(fixtures_dir / name / "wts.h5.zip") as zf:
        manifest = load(zf.read(L.MANIFEST_MEMBER), member=L.MANIFEST_MEMBER)
        assert manifest["version"] == L.MANIFEST_VERSION
        for model in manifest["models"]:
            for part in (L.PARAMS_MEMBER, L.CUSTOM_OBJECTS_MEMBER, L.KERAS_MEMBER, L.MODEL_H5_MEMBER):
                assert L.model_member(model, part) in zf.namelist()
        d2o = L.SUPPORTED_MODELS[0]
        for part in (L.MANIFEST_MEMBER, L.model_member(d2o, L.PARAMS_MEMBER), L.model_member(d2o, L.CUSTOM_OBJECTS_MEMBER)):
            assert zf.read(part)[:2] == bytes([0x80, L.PICKLE_PROTOCOL]), part
        params = load(zf.read(L.model_member(d2o, L.PARAMS_MEMBER)), member=L.PARAMS_MEMBER)
        assert params["_version"] == L.PARAMS_VERSION
        with zipfile.ZipFile(zf.open(L.model_member(d2o, L.KERAS_MEMBER))) as kz:
            assert kz.namelist() == [L.KERAS_METADATA, L.KERAS_CONFIG, L.KERAS_WEIGHTS]
            assert json.loads(kz.read(L.KERAS_METADATA))["keras_version"] == L.KERAS_VERSION
            assert [i.date_time for i in kz.infolist()[:2]] == [L.KERAS_ZIP_FIXED_DATE] * 2


def test_default_padded_size_uses_upstreams_defaults_for_absent_keys() -> None:
    assert (L.TF_DEFAULT_OFFSET, L.TF_DEFAULT_JITTER) == (4, 10)
    assert L.default_padded_size(64, 2, {}) == tf_padded_size(64, 2, 4, 10) == 78
    assert L.default_padded_size(64, 2, {"offset": 6}) == 80
    assert L.default_padded_size(64, 1, {"offset": 6, "max_position_jitter": 0}) == 64


def test_paths_and_manifest() -> None:
    assert L.vars_group("conv2d_3") == "layers/conv2d_3/vars"
    assert L.model_member("diffraction_to_obj", L.PARAMS_MEMBER) == "diffraction_to_obj/params.dill"
    assert L.manifest_dict(["a"]) == {"models": ["a"], "version": "1.0"}
    assert pickle.loads(pickle.dumps(L.manifest_dict(["a"]), protocol=L.PICKLE_PROTOCOL)) == {"models": ["a"], "version": "1.0"}
