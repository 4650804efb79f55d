"""Round trip per torch format with a writer: upstream fixture -> torch legacy members -> read back.

torch-bundle-2 is the one torch format we write (``torch_legacy_members``; torch-json-1 and Lightning
checkpoints are read only). Reading a real upstream bundle, writing its members again and reading
those must give the same spec, params (but for the flag the writer reconciles, see below), torch
configs and every tensor, bit for bit.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from converters.pytorch.write import torch_legacy_members
from ptycho_bridge.formats.detect import read_archive
from tests._support import FIXTURES_DIR, TORCH_CASES


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_bundle_round_trip(tmp_path: Path, case: str) -> None:
    src = read_archive(FIXTURES_DIR / case / "wts.h5.zip")
    assert src.era == "torch-bundle-2" and src.intensity_scale is not None
    entry = src.primary
    assert entry.spec is not None
    members = torch_legacy_members(entry.spec, dict(entry.tensors), src.params, torch_config=src.torch_config,
                                   intensity_scale=src.intensity_scale, models=tuple(src.models))
    path = tmp_path / "written.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    back = read_archive(path)

    assert back.era == src.era and list(back.models) == list(src.models)
    assert back.primary.spec == entry.spec
    # the one deliberate difference: the writer makes params' intensity_scale.trainable agree with the
    # torch model_config (upstream's fixtures disagree, which the reader warns about), so that upstream's
    # plain load_torch_bundle rebuilds the same scaling as load_inference_bundle_torch
    flag = src.torch_config["model_config"]["intensity_scale_trainable"]
    assert back.params == {**src.params, "intensity_scale.trainable": flag}
    assert list(back.params) == list(src.params)
    assert [w for w in back.warnings if "intensity_scale.trainable" in w] == []
    assert back.intensity_scale == src.intensity_scale
    assert back.torch_config == src.torch_config
    for key, section in src.torch_config.items():
        assert list(back.torch_config[key]) == list(section), key  # field order too
    assert back.manifest == src.manifest
    assert list(back.primary.tensors) == list(entry.tensors)
    for name, value in entry.tensors.items():
        got = back.primary.tensors[name]
        assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value), name
    for name, model in src.models.items():
        assert back.models[name].sentinel == model.sentinel, name
        assert back.models[name].payload.get("sentinel") == model.payload.get("sentinel"), name
