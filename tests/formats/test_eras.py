"""Era readers on the real upstream archives: every canonical tensor equals upstream's bytes.

Expected values come from the fixtures themselves (golden.json, golden.npz, MANIFEST.json), from the
upstream weight files opened directly with zipfile + h5py (TF) or ``torch.load(weights_only=True)``
(torch; the test may do that, the library never does), and from the layer-naming rules written in
../shared/docs/upstream-architecture.md §1.7 — never from the code under test.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptycho_bridge import read_archive
from ptycho_bridge.formats.bridge2.layout import tensor_sha256
from ptycho_bridge.formats.bridge2.verify import verify_checksums
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import LazyTensors
from ptycho_bridge.spec.mapping import canonical_to_torch
from ptycho_bridge.spec.network import check_tensors, expected_tensors
from tests._support import CASES, TF_CASES, TORCH_CASES, read_member

MODELS = ("diffraction_to_obj", "autoencoder")


def golden(fixtures_dir: Path, case: str) -> dict[str, Any]:
    return json.loads((fixtures_dir / case / "golden.json").read_text())


def config(fixtures_dir: Path, case: str) -> dict[str, Any]:
    """The case's config from MANIFEST.json, cross-checked against its golden.json."""
    cases = {c["case"]: c for c in json.loads((fixtures_dir / "MANIFEST.json").read_text())["cases"]}
    cfg = cases[case]["config"]
    assert cfg == golden(fixtures_dir, case)["config"]
    return cfg


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


# ---------------------------------------------------------------------------------------------------
# TF: upstream layer names (../shared/docs/upstream-architecture.md §1.7, closed form) → canonical roles
# ---------------------------------------------------------------------------------------------------
def tf_layer_names(N: int, pad_object: bool, probe_big: bool) -> dict[str, str]:
    """Canonical conv prefix → Keras layer name, from the documented construction order.

    encoder block b: conv1 = 2b, conv2 = 2b+1; head h (amp 0, phase 1): base_h = 2E + h(2D+2+X),
    conv1 = base_h, conv2 = base_h+1, decoder block d: base_h+2+2d, base_h+3+2d, outer up-block:
    base_h+2+2D, base_h+3+2D; X = 2 if (pad_object and probe.big) or not pad_object else 0.
    """
    E = int(math.log2(N)) - 3
    D = E - 1
    X = 2 if (pad_object and probe_big) or not pad_object else 0

    def name(k: int) -> str:
        return "conv2d" if k == 0 else f"conv2d_{k}"

    out = {}
    for b in range(E):
        out[f"encoder.{b}.conv1"], out[f"encoder.{b}.conv2"] = name(2 * b), name(2 * b + 1)
    for h, head in enumerate(("amp", "phase")):
        base = 2 * E + h * (2 * D + 2 + X)
        out[f"{head}.conv1"], out[f"{head}.conv2"] = name(base), name(base + 1)
        for d in range(D):
            out[f"{head}.decoder.{d}.conv1"] = name(base + 2 + 2 * d)
            out[f"{head}.decoder.{d}.conv2"] = name(base + 3 + 2 * d)
        out[f"{head}.outer.conv1"], out[f"{head}.outer.conv2"] = name(base + 2 + 2 * D), name(base + 3 + 2 * D)
    return out


def upstream_tf_weights(archive: Path, model: str) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """Keras layer name → (kernel HWIO, bias, h5 group) read straight from model.weights.h5."""
    import h5py

    keras = read_member(archive, f"{model}/model.keras")
    with zipfile.ZipFile(io.BytesIO(keras)) as kz:
        weights = kz.read("model.weights.h5")
    out: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    with h5py.File(io.BytesIO(weights), "r") as f:
        for alias, group in f["layers"].items():
            if "vars" not in group or "0" not in group["vars"]:
                continue
            layer = group["vars"].attrs["name"]
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            assert layer not in out
            out[layer] = (group["vars"]["0"][()], group["vars"]["1"][()], f"layers/{alias}/vars")
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("case", TF_CASES)
def test_tf_tensors_bit_for_bit(fixtures_dir: Path, case: str, model: str) -> None:
    cfg = config(fixtures_dir, case)
    archive = fixtures_dir / case / "wts.h5.zip"
    arch = read_archive(archive)
    entry = arch.models[model]
    upstream = upstream_tf_weights(archive, model)
    names = tf_layer_names(cfg["N"], cfg["pad_object"], cfg["probe.big"])

    assert len(upstream) == len(names)  # every conv of the weight file has exactly one role
    assert set(names.values()) == set(upstream)
    assert len(entry.tensor_info) == 2 * len(names)  # and nothing else is canonical
    for prefix, layer in names.items():
        kernel, bias, group = upstream[layer]
        ours_w, ours_b = entry.tensors[f"{prefix}.weight"], entry.tensors[f"{prefix}.bias"]
        assert kernel.dtype == np.float32 and kernel.ndim == 4
        assert bits_equal(ours_w, kernel.transpose(3, 2, 0, 1)), f"{prefix}.weight != {layer} ({group})"
        assert bits_equal(ours_b, bias), f"{prefix}.bias != {layer}"
        assert entry.tensor_info[f"{prefix}.weight"].source_name == f"{group}/0"


def test_tf_spot_checks_from_the_docs(fixtures_dir: Path) -> None:
    """../shared/docs/upstream-formats.md §4 table for tf_N64_gs1: h5 alias, real layer name, kernel shape."""
    archive = fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"
    d2o = read_archive(archive).primary
    upstream = upstream_tf_weights(archive, "diffraction_to_obj")
    rows = [  # (canonical, layer name, h5 alias, kernel HWIO)
        ("amp.conv1", "conv2d_6", "conv2d_20", (3, 3, 28, 1)),
        ("phase.conv1", "conv2d_14", "conv2d_21", (3, 3, 28, 1)),
        ("amp.conv2", "conv2d_7", "conv2d_18", (3, 3, 32, 1)),
        ("phase.conv2", "conv2d_15", "conv2d_19", (3, 3, 32, 1)),
        ("amp.outer.conv1", "conv2d_12", "conv2d_14", (3, 3, 4, 32)),
        ("phase.decoder.0.conv1", "conv2d_16", "conv2d_7", (3, 3, 128, 64)),
        ("encoder.0.conv1", "conv2d", "conv2d", (3, 3, 1, 32)),
    ]
    for canonical, layer, alias, hwio in rows:
        kernel, _bias, group = upstream[layer]
        assert group == f"layers/{alias}/vars"
        assert kernel.shape == hwio
        ours = d2o.tensors[f"{canonical}.weight"]
        assert ours.shape == (hwio[3], hwio[2], hwio[0], hwio[1])
        assert bits_equal(ours, kernel.transpose(3, 2, 0, 1))
    assert d2o.tensors["amp.conv1.weight"].shape == (1, 28, 3, 3)


@pytest.mark.parametrize("case", TF_CASES)
def test_tf_params_probe_scale(fixtures_dir: Path, case: str) -> None:
    cfg = config(fixtures_dir, case)
    gold = np.load(fixtures_dir / case / "golden.npz")
    scale = golden(fixtures_dir, case)["how_output_was_computed"]["intensity_scale"]
    arch = read_archive(fixtures_dir / case / "wts.h5.zip")
    assert (arch.era, arch.backend) == ("tf-modelmanager-1", "tensorflow")
    assert arch.intensity_scale == scale == float(gold["intensity_scale"])
    assert arch.probe is not None and bits_equal(arch.probe, gold["probe"])
    assert arch.params["N"] == cfg["N"] and arch.params["gridsize"] == cfg["gridsize"]
    assert arch.params["offset"] == cfg["offset"] and arch.params["max_position_jitter"] == cfg["max_position_jitter"]
    spec = arch.primary.spec
    assert spec is not None
    assert (spec.N, spec.gridsize, spec.channels, spec.n_filters_scale) == (cfg["N"], cfg["gridsize"], cfg["C"], cfg["n_filters_scale"])
    assert (spec.object_big, spec.probe_big, spec.pad_object, spec.amp_activation) == (
        cfg["object.big"], cfg["probe.big"], cfg["pad_object"], cfg["amp_activation"])
    # upstream get_padded_size() = N + (g-1)*offset + max_position_jitter
    assert spec.padded_size == cfg["N"] + (cfg["gridsize"] - 1) * cfg["offset"] + cfg["max_position_jitter"]
    assert arch.primary.payload["model_h5_intensity_scale"] == scale
    # both models share the same layers upstream, so their weights are identical
    ae = arch.models["autoencoder"]
    assert set(ae.tensors) == set(arch.primary.tensors)
    assert all(bits_equal(ae.tensors[k], arch.primary.tensors[k]) for k in ae.tensors)


def test_tf_reads_lazily(fixtures_dir: Path) -> None:
    arch = read_archive(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    tensors = arch.primary.tensors
    assert isinstance(tensors, LazyTensors) and not tensors.loaded
    assert arch.primary.nbytes == sum(int(np.prod(i.shape)) * 4 for i in arch.primary.tensor_info.values())
    _ = tensors["encoder.0.conv1.weight"]
    assert tensors.loaded


# ---------------------------------------------------------------------------------------------------
# torch bundles and the Lightning checkpoint, against torch.load(weights_only=True)
# ---------------------------------------------------------------------------------------------------
def _torch_load(data: bytes) -> Any:
    torch = pytest.importorskip("torch")
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _plain(value: Any) -> Any:
    """Config values as JSON-like data (tuples → lists) so both readers' outputs compare."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _assert_state_dict_equal(entry: Any, state: dict[str, Any]) -> None:
    keys = {canonical_to_torch(name): name for name in entry.tensor_info}
    assert set(keys) == set(state)  # a bijection: nothing dropped, nothing invented
    for key, name in keys.items():
        ref = state[key].detach().numpy()
        assert bits_equal(entry.tensors[name], ref), f"{name} != {key}"
        assert entry.tensor_info[name].source_name == key


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_bundle_bit_for_bit(fixtures_dir: Path, case: str) -> None:
    cfg = config(fixtures_dir, case)
    archive = fixtures_dir / case / "wts.h5.zip"
    arch = read_archive(archive)
    assert (arch.era, arch.backend) == ("torch-bundle-2", "pytorch")
    state = _torch_load(read_member(archive, "diffraction_to_obj/model.pth"))
    _assert_state_dict_equal(arch.primary, state)

    sentinel = _torch_load(read_member(archive, "autoencoder/model.pth"))
    assert arch.models["autoencoder"].sentinel and sentinel == {"_sentinel": "autoencoder"}
    assert arch.models["autoencoder"].spec is None and len(arch.models["autoencoder"].tensors) == 0

    meta = _torch_load(read_member(archive, "torch_scaling_metadata.pt"))
    assert arch.torch_config is not None
    for key in ("model_config", "data_config", "training_config", "inference_config"):
        assert _plain(arch.torch_config[key]) == _plain(meta[key]), key
    assert arch.intensity_scale == cfg["params_dill_intensity_scale"]
    assert arch.params["N"] == cfg["N"] and arch.params["gridsize"] == cfg["gridsize"]

    spec = arch.primary.spec
    assert spec is not None
    assert (spec.N, spec.gridsize, spec.channels, spec.n_filters_scale) == (cfg["N"], cfg["gridsize"], cfg["C"], cfg["n_filters_scale"])
    assert (spec.object_big, spec.probe_big, spec.amp_activation) == (cfg["object_big"], cfg["probe_big"], cfg["amp_activation"])
    assert (spec.cbam_encoder, spec.batch_norm) == (cfg["cbam_encoder"], cfg["batch_norm"])
    assert meta["model_config"]["intensity_scale_trainable"] == cfg["intensity_scale_trainable"]


def test_lightning_checkpoint_bit_for_bit(fixtures_dir: Path) -> None:
    cfg = config(fixtures_dir, "torch_N64_gs1")
    ckpt = fixtures_dir / "torch_N64_gs1" / "lightning.ckpt"
    arch = read_archive(ckpt)
    assert (arch.era, arch.backend) == ("lightning-ckpt", "pytorch")
    data = _torch_load(ckpt.read_bytes())
    _assert_state_dict_equal(arch.primary, data["state_dict"])
    hp = data["hyper_parameters"]
    assert arch.torch_config is not None
    for key in ("model_config", "data_config", "training_config", "inference_config"):
        assert _plain(arch.torch_config[key]) == _plain(hp[key]), key
    extras = {k: v for k, v in hp.items() if k not in ("model_config", "data_config", "training_config", "inference_config")}
    assert _plain(arch.torch_config["hyper_parameters"]) == _plain(extras)
    assert arch.primary.payload["global_step"] == data["global_step"]
    assert arch.primary.payload["lightning_version"] == data["pytorch-lightning_version"]
    spec = arch.primary.spec
    assert spec is not None and (spec.N, spec.gridsize, spec.cbam_encoder) == (cfg["N"], cfg["gridsize"], cfg["cbam_encoder"])
    assert arch.intensity_scale is None  # a checkpoint records no trained intensity scale


def test_checkpoint_and_bundle_hold_the_same_weights(fixtures_dir: Path) -> None:
    """golden.json: the .ckpt was saved after the same perturbation as the bundle."""
    bundle = read_archive(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip").primary
    ckpt = read_archive(fixtures_dir / "torch_N64_gs1" / "lightning.ckpt").primary
    assert set(bundle.tensors) == set(ckpt.tensors)
    assert all(bits_equal(bundle.tensors[k], ckpt.tensors[k]) for k in bundle.tensors)
    assert bundle.spec == ckpt.spec


# ---------------------------------------------------------------------------------------------------
# bridge-2 (our own format) via the deterministic sample
# ---------------------------------------------------------------------------------------------------
def test_bridge_sample_round_trip(tmp_path: Path) -> None:
    from ptycho_bridge.ops.sample import sample_params, sample_tensors, write_sample

    path = write_sample(tmp_path / "wts.h5.zip")
    arch = read_archive(path)
    assert (arch.era, arch.backend, arch.has_checksums) == ("bridge-2", "tensorflow", True)
    spec = arch.primary.spec
    assert spec is not None
    want = sample_tensors(spec)
    assert set(arch.primary.tensors) == set(want) == set(expected_tensors(spec))
    assert all(bits_equal(arch.primary.tensors[k], want[k]) for k in want)
    params = sample_params()
    assert bits_equal(arch.probe, params["probe"])
    assert arch.intensity_scale == params["intensity_scale"]
    assert {k: v for k, v in arch.params.items() if k != "probe"} == {k: v for k, v in params.items() if k != "probe"}
    for name, meta in arch.manifest["models"]["diffraction_to_obj"]["tensors"].items():
        assert meta["sha256"] == tensor_sha256(want[name])
    with SafeZip(path) as zf:
        checked = verify_checksums(zf, arch.manifest)
    assert len(checked) == len(arch.manifest["members"]) + len(want)
    # readable from its folder too, like upstream's "<dir>/wts.h5.zip"
    assert read_archive(tmp_path).era == "bridge-2"


# ---------------------------------------------------------------------------------------------------
# Conformance: what every era reader must do (one class, every real archive)
# ---------------------------------------------------------------------------------------------------
ARCHIVES = [(c, "wts.h5.zip") for c in CASES] + [("torch_N64_gs1", "lightning.ckpt")]


@pytest.mark.parametrize("case, filename", ARCHIVES, ids=[f"{c}/{f}" for c, f in ARCHIVES])
class TestEraConformance:
    def test_spec_and_tensors_agree(self, fixtures_dir: Path, case: str, filename: str) -> None:
        arch = read_archive(fixtures_dir / case / filename)
        for name, entry in arch.models.items():
            if entry.sentinel:
                continue
            assert entry.spec is not None
            check_tensors(entry.spec, {k: v.shape for k, v in entry.tensor_info.items()}, member=name)
            for tname, info in entry.tensor_info.items():
                arr = entry.tensors[tname]
                assert arr.shape == info.shape and str(arr.dtype) == info.dtype == "float32"
                assert np.isfinite(arr).all()

    def test_reading_is_deterministic(self, fixtures_dir: Path, case: str, filename: str) -> None:
        a = read_archive(fixtures_dir / case / filename).primary
        b = read_archive(fixtures_dir / case / filename).primary
        assert a.spec == b.spec and list(a.tensor_info) == list(b.tensor_info)
        assert all(bits_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)

    def test_path_forms(self, fixtures_dir: Path, case: str, filename: str) -> None:
        """A wts.h5.zip is also found from its folder (upstream's ``<dir>/wts.h5.zip``); str paths work."""
        era = read_archive(fixtures_dir / case / filename).era
        assert read_archive(str(fixtures_dir / case / filename)).era == era
        if filename == "wts.h5.zip":
            assert read_archive(fixtures_dir / case).era == era

    def test_writes_nothing(self, fixtures_dir: Path, case: str, filename: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        arch = read_archive(fixtures_dir / case / filename)
        for entry in arch.models.values():
            dict(entry.tensors)
        assert list(tmp_path.iterdir()) == []


def test_require_field_accepts_numpy_float_as_float() -> None:
    """SavedModel-era params.dill pickles intensity_scale as numpy.float32: accepted, returned as float."""
    import numpy as np

    from ptycho_bridge.errors import FormatError
    from ptycho_bridge.formats.base import require_field

    value = require_field({"s": np.float32(988.2118)}, "s", (int, float), member="m")
    assert type(value) is float and value == float(np.float32(988.2118))
    with pytest.raises(FormatError):
        require_field({"s": np.float32(1.0)}, "s", int, member="m")
    with pytest.raises(FormatError):
        require_field({"s": np.int64(1)}, "s", float, member="m")
