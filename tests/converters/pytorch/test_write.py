"""converters/pytorch_archive.py: our hand-written torch zips and torch legacy members.

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

from converters.pytorch.torchzip import load_torch_bytes
from converters.pytorch.write import (
    c_outer_override,
    torch_config_for,
    torch_legacy_members,
    torch_zip_bytes,
)
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.formats.base import read_pickle, read_torch
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safepickle import decode, load_inert
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors, tf_spec

ATTENTION = ".attention."


def _arrays() -> "collections.OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(7)
    return collections.OrderedDict(
        w=rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        d=rng.standard_normal(5),  # float64
        i64=np.arange(-3, 9, dtype=np.int64).reshape(3, 4),
        i32=np.array([2**31 - 1, -(2**31)], dtype=np.int32),
        b=np.array([[True, False], [False, True]]),
        scalar=np.array(3.5, dtype=np.float32),
        empty=np.zeros((0, 7), dtype=np.float32),
        transposed=np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
        big_endian=np.arange(6, dtype=">f4"),
    )


def _torch_spec_from_tf(**kw: Any) -> NetworkSpec:
    """The torch-expressible twin of a TF spec (what convert's TF→torch plan builds)."""
    src = tf_spec(**{"N": 64, "gridsize": 1, "n_filters_scale": 1, "object_big": True, "probe_big": True,
                     "pad_object": True, "amp_activation": "sigmoid", **kw})
    return NetworkSpec(**{**src.to_dict(), "outer_width": src.latent_width, "outer_tensors": True,
                          "channels_in": src.channels if src.object_big else 1})


def _random_tensors(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in expected_tensors(spec).items()}


def _params(spec: NetworkSpec) -> dict[str, Any]:
    return {"N": spec.N, "gridsize": spec.gridsize, "n_filters_scale": spec.n_filters_scale,
            "object.big": spec.object_big, "probe.big": spec.probe_big, "pad_object": True,
            "amp_activation": spec.amp_activation, "nepochs": 3, "batch_size": 8, "intensity_scale.trainable": True,
            "probe": np.ones((spec.N, spec.N, 1), np.complex64), "offset": 4}


def _zip(members: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _plain(data: bytes) -> Any:
    return decode(load_inert(data, member="test"), member="test")


# -- torch_zip_bytes ---------------------------------------------------------------------------
def test_torch_load_reads_our_zip_exactly() -> None:
    torch = pytest.importorskip("torch")
    obj = _arrays()
    loaded = torch.load(io.BytesIO(torch_zip_bytes(obj)), weights_only=True)
    assert type(loaded) is collections.OrderedDict and list(loaded) == list(obj)
    for key, want in obj.items():
        got = loaded[key]
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == want.shape, key
        assert got.numpy().dtype == want.dtype.newbyteorder("="), key
        assert np.array_equal(got.numpy(), want), key


def test_torch_load_reads_plain_containers() -> None:
    torch = pytest.importorskip("torch")
    obj = {"s": "é", "n": None, "t": True, "f": False, "i": [0, 255, 256, 65536, -1, 2**31, -(2**40), 2**80],
           "x": 2.5e-300, "tup": (1, (2, 3), (4, 5, 6, 7)), "empty": {}, "lst": [], "nested": {"a": [np.arange(3)]}}
    loaded = torch.load(io.BytesIO(torch_zip_bytes(obj)), weights_only=True)
    assert loaded["nested"]["a"][0].tolist() == [0, 1, 2]
    loaded["nested"]["a"][0] = obj["nested"]["a"][0] = None
    assert loaded == obj


def test_our_reader_reads_our_zip_identically() -> None:
    obj = _arrays()
    back = load_torch_bytes(torch_zip_bytes(obj, prefix="model"), label="ours.pth")
    assert list(back) == list(obj)
    for key, want in obj.items():
        assert back[key].dtype == want.dtype.newbyteorder("=") and np.array_equal(back[key], want), key


def test_zip_layout_alignment_and_determinism(tmp_path: Path) -> None:
    data = torch_zip_bytes(_arrays(), prefix="model")
    assert data == torch_zip_bytes(_arrays(), prefix="model")  # equal input → equal bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names[:4] == ["model/data.pkl", "model/.format_version", "model/.storage_alignment", "model/byteorder"]
        assert names[-2:] == ["model/version", "model/.data/serialization_id"]
        assert zf.read("model/byteorder") == b"little" and zf.read("model/version") == b"3\n"
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            local = data[info.header_offset : info.header_offset + 30]
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
    torch = pytest.importorskip("torch")
    path = tmp_path / "x.pth"
    path.write_bytes(data)
    loaded = torch.load(path, weights_only=True, mmap=True)  # mmap needs the 64-byte alignment
    assert np.array_equal(loaded["w"].numpy(), _arrays()["w"])


@pytest.mark.parametrize("bad", [np.zeros(2, np.complex64), np.array(["a"]), object(), b"bytes", {1, 2}])
def test_unsupported_values_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        torch_zip_bytes({"x": bad})


# -- torch config and c_outer override ---------------------------------------------------------
@pytest.mark.parametrize("nfs", [1, 2, 3, 5, 6, 7])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_c_outer_override_gives_four_channels_under_upstreams_formula(nfs: int, gridsize: int) -> None:
    spec = _torch_spec_from_tf(n_filters_scale=nfs, gridsize=gridsize)
    mc = torch_config_for(spec, {})["model_config"]
    cout = gridsize * gridsize
    if cout == 4:  # torch's default c_outer = Cout already equals TF's 4
        assert mc["use_legacy_decoder_channel_override"] is False
        return
    assert mc["use_legacy_decoder_channel_override"] is True
    frac = mc["decoder_last_c_outer_fraction"]
    assert max(1, int(32 * nfs * min(max(frac, 0.0), 0.5))) == 4  # upstream-architecture.md §2.3
    assert mc["decoder_last_amp_channels"] == cout


def test_c_outer_override_refuses_more_than_half_the_latent() -> None:
    spec = NetworkSpec(**{**_torch_spec_from_tf().to_dict(), "c_outer": 20})
    with pytest.raises(ConversionRefused, match="c_outer=20"):
        c_outer_override(spec)


def test_torch_config_refuses_networks_torch_cannot_build() -> None:
    src = tf_spec(N=128, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                  amp_activation="sigmoid")
    with pytest.raises(ConversionRefused, match="outer_width=16") as info:
        torch_config_for(src, {})
    assert info.value.field == "outer_width"


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
    spec = _torch_spec_from_tf(gridsize=gridsize)
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
    spec = _torch_spec_from_tf(gridsize=2)
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
    spec = _torch_spec_from_tf(**kw)
    tensors = _random_tensors(spec, seed=3)
    members = torch_legacy_members(spec, tensors, _params(spec), torch_config=None, intensity_scale=5.0)
    arch = read_archive(_zip(members, tmp_path / "legacy.zip"))
    assert arch.era == "torch-bundle-2" and arch.intensity_scale == 5.0
    assert arch.primary.spec == NetworkSpec(**{**spec.to_dict(), "padded_size": None})
    assert arch.warnings == [] and arch.primary.warnings == []  # no plain-loader / amp-name disagreement
    for name, value in tensors.items():
        assert np.array_equal(arch.primary.tensors[name], value), name
    assert sorted(n for n in arch.primary.tensors if n.startswith("training.")) == [
        "training.forward_model.alpha", "training.forward_model.beta",
        "training.forward_model.rect_scaler.s1", "training.forward_model.rect_scaler.s2"]
