"""converters/pytorch/write.py: the torch legacy members (torch.save zips: test_torchzip.py; configs: test_configs.py).

Compatibility is proven with torch itself (``torch.load(weights_only=True)`` on OUR output only)
and with our own safe reader; structure is compared with the real upstream torch fixtures (member
names, manifest/params keys and types, state_dict keys, shapes and order, metadata keys).
"""

from __future__ import annotations

import collections
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.pytorch.torchzip import load_torch_bytes, read_torch
from converters.pytorch.write import torch_legacy_members
from ptycho_bridge.formats.base import read_pickle
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safepickle import decode, load_inert
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors
from tests._support import torch_twin_of_tf_spec, zip_of

ATTENTION = ".attention."


def _random_tensors(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in expected_tensors(spec).items()}


def _params(spec: NetworkSpec) -> dict[str, Any]:
    return {"N": spec.N, "gridsize": spec.gridsize, "n_filters_scale": spec.n_filters_scale,
            "object.big": spec.object_big, "probe.big": spec.probe_big, "pad_object": True,
            "amp_activation": spec.amp_activation, "nepochs": 3, "batch_size": 8, "intensity_scale.trainable": True,
            "probe": np.ones((spec.N, spec.N, 1), np.complex64), "offset": 4}


def _plain(data: bytes) -> Any:
    return decode(load_inert(data, member="test"), member="test")


# -- legacy members against the upstream fixtures -----------------------------------------------
@pytest.fixture(scope="module")
def fixture_members(fixtures_dir: Path) -> dict[str, dict[str, Any]]:
    """Decoded members of the two torch fixtures (safe readers only)."""
    out = {}
    for case in ("torch_N64_gs1", "torch_N64_gs2"):
        with SafeZip(fixtures_dir / case / "wts.h5.zip", label=case) as zf:
            out[case] = {
                "names": sorted(zf.names()),
                "manifest": read_pickle(zf, "manifest.dill"),
                "params": read_pickle(zf, "diffraction_to_obj/params.dill"),
                "state_dict": read_torch(zf, "diffraction_to_obj/model.pth"),
                "sentinel": read_torch(zf, "autoencoder/model.pth"),
                "metadata": read_torch(zf, "torch_scaling_metadata.pt"),
            }
    return out


@pytest.mark.parametrize("gridsize", [1, 2])
def test_members_match_upstream_structure(fixture_members: dict[str, dict[str, Any]], gridsize: int) -> None:
    ref = fixture_members[f"torch_N64_gs{gridsize}"]
    spec = torch_twin_of_tf_spec(gridsize=gridsize)
    members = torch_legacy_members(spec, _random_tensors(spec), _params(spec), torch_config=None, intensity_scale=988.25)
    assert sorted(members) == ref["names"]

    manifest = _plain(members["manifest.dill"])
    assert manifest == ref["manifest"] == {"models": ["diffraction_to_obj", "autoencoder"], "version": "2.0-pytorch"}

    params = _plain(members["diffraction_to_obj/params.dill"])
    assert members["autoencoder/params.dill"] == members["diffraction_to_obj/params.dill"]
    assert list(params) == list(ref["params"])  # same 63 keys, same order
    for key, value in params.items():
        if value is not None and ref["params"][key] is not None:
            assert type(value) is type(ref["params"][key]), key
    assert params["intensity_scale"] == 988.25 and params["_version"] == "2.0-pytorch"
    assert params["nepochs"] == 3 and params["batch_size"] == 8 and params["backend"] == "pytorch"
    # upstream's plain loader rebuilds the scaling from this flag: it must agree with the metadata
    meta = load_torch_bytes(members["torch_scaling_metadata.pt"], label="meta")
    assert params["intensity_scale.trainable"] is meta["model_config"]["intensity_scale_trainable"] is False

    sd = load_torch_bytes(members["diffraction_to_obj/model.pth"], label="model.pth")
    want = {k: v.shape for k, v in ref["state_dict"].items() if ATTENTION not in k}
    assert list(sd) == list(want)  # upstream key order, CBAM tensors aside
    c_outer_dependent = {k for k in want if k.endswith(("amp.conv1.weight", "phase.conv1.weight",
                                                        "conv_up_block.conv1.weight"))}
    for key, shape in want.items():
        if gridsize == 2 or key not in c_outer_dependent:  # gs1: upstream c_outer=1, ours TF's 4
            assert sd[key].shape == shape, key
    for key in ("alpha", "beta", "rect_scaler.s1", "rect_scaler.s2"):
        assert np.array_equal(sd[f"model.forward_model.{key}"], np.ones(1, np.float32))

    assert load_torch_bytes(members["autoencoder/model.pth"], label="ae") == ref["sentinel"] == {"_sentinel": "autoencoder"}

    ref_meta = ref["metadata"]
    assert list(meta) == list(ref_meta) and meta["schema_version"] == "ci-entrypoints-v1" and meta["ci_statistics"] is None
    for section in ("data_config", "model_config", "training_config", "inference_config"):
        assert list(meta[section]) == list(ref_meta[section]), section
    assert meta["data_config"]["grid_size"] == (gridsize, gridsize) == ref_meta["data_config"]["grid_size"]
    assert meta["data_config"]["C"] == gridsize**2 and meta["data_config"]["N"] == 64
    mc = meta["model_config"]
    assert (mc["cbam_encoder"], mc["cbam_bottleneck"], mc["batch_norm"]) == (False, False, False)
    assert mc["n_filters_scale"] == 1 and meta["training_config"]["epochs"] == 3  # from params' nepochs


def test_members_load_with_torch_weights_only() -> None:
    torch = pytest.importorskip("torch")
    spec = torch_twin_of_tf_spec(gridsize=2)
    tensors = _random_tensors(spec)
    members = torch_legacy_members(spec, tensors, _params(spec), torch_config=None, intensity_scale=2.0)
    sd = torch.load(io.BytesIO(members["diffraction_to_obj/model.pth"]), weights_only=True)
    assert type(sd) is collections.OrderedDict
    key = "model.autoencoder.decoder_amp.amp.conv1.weight"
    assert np.array_equal(sd[key].numpy(), tensors["amp.conv1.weight"])
    meta = torch.load(io.BytesIO(members["torch_scaling_metadata.pt"]), weights_only=True)
    assert meta["data_config"]["grid_size"] == (2, 2)
    assert torch.load(io.BytesIO(members["autoencoder/model.pth"]), weights_only=True) == {"_sentinel": "autoencoder"}


@pytest.mark.parametrize("kw", [
    {},
    {"gridsize": 2},
    {"n_filters_scale": 3},
    {"N": 128, "probe_big": False, "n_filters_scale": 2},
    {"object_big": False},
    {"amp_activation": "swish"},
])
def test_our_torch_bundle_reader_rebuilds_the_same_network(tmp_path: Path, kw: dict[str, Any]) -> None:
    """The legacy members alone (no bridge-2 manifest) must describe exactly the spec they were written for."""
    spec = torch_twin_of_tf_spec(**kw)
    tensors = _random_tensors(spec, seed=3)
    members = torch_legacy_members(spec, tensors, _params(spec), torch_config=None, intensity_scale=5.0)
    arch = read_archive(zip_of(members, tmp_path / "legacy.zip", zipfile.ZIP_STORED))
    assert arch.era == "torch-bundle-2" and arch.intensity_scale == 5.0
    assert arch.primary.spec == NetworkSpec(**{**spec.to_dict(), "padded_size": None})
    assert arch.warnings == [] and arch.primary.warnings == []  # no plain-loader / amp-name disagreement
    for name, value in tensors.items():
        assert np.array_equal(arch.primary.tensors[name], value), name
    assert sorted(n for n in arch.primary.tensors if n.startswith("training.")) == [
        "training.forward_model.alpha", "training.forward_model.beta",
        "training.forward_model.rect_scaler.s1", "training.forward_model.rect_scaler.s2"]
