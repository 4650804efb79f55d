"""ptycho_bridge.ops.convert and ``ptycho-bridge convert``: TF ↔ torch conversion or a precise refusal.

Real data: the TF fixtures converted to torch must reproduce upstream TF's own goldens when run by
the torch engine (plus the numpy TF reassembly); the upstream torch fixtures (CBAM on) must be
refused; round trips must give bit-identical canonical tensors and the same params. The refusal
matrix is checked row by row on specs that break exactly one condition.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from converters.pytorch.torchzip import read_torch
from ptycho_bridge.cli import main
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.formats.base import read_pickle
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import BridgeArchive, ModelEntry
from ptycho_bridge.ops.convert import convert_archive, plan_conversion
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.spec.expressible import RULES
from ptycho_bridge.spec.network import (
    NetworkSpec,
    expected_tensors,
    tf_padded_size,
    tf_spec,
)
from tests._support import legacy_only

CONVERTIBLE_TF = ("tf_N64_gs1", "tf_N64_gs2")
TOL = 1e-5  # × max|golden| of the region
ATTENTION = ".attention."


def _assert_params_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert isinstance(got[key], np.ndarray) and got[key].dtype == value.dtype, key
            assert np.array_equal(got[key], value), key
        else:
            assert got[key] == value and type(got[key]) is type(value), key


def _assert_tensors_identical(got: BridgeArchive, want: BridgeArchive) -> None:
    a, b = got.primary.tensors, want.primary.tensors
    assert sorted(a) == sorted(b)
    for name in b:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def converted(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every convertible TF fixture → torch → TF → torch, written once per module."""
    root = tmp_path_factory.mktemp("convert")
    out: dict[str, dict[str, Path]] = {}
    for case in CONVERTIBLE_TF:
        source = fixtures_dir / case / "wts.h5.zip"
        torch1 = convert_archive(source, "pytorch", root / case / "torch")
        tf2 = convert_archive(torch1, "tensorflow", root / case / "tf.zip")
        torch3 = convert_archive(tf2, "pytorch", root / case / "torch3.zip")
        out[case] = {"source": source, "torch": torch1, "tf": tf2, "torch3": torch3}
    return out


# -- TF → torch on real fixtures -------------------------------------------------------------------
@pytest.mark.parametrize("case", CONVERTIBLE_TF)
def test_tf_to_torch_output_is_a_valid_torch_bridge_archive(converted: dict[str, dict[str, Path]], case: str) -> None:
    paths = converted[case]
    assert paths["torch"].name == "wts.h5.zip"  # a folder OUT gets OUT/wts.h5.zip
    report = validate_path(paths["torch"])
    assert report["valid"], report["errors"]
    arch = read_archive(paths["torch"])
    source = read_archive(paths["source"])
    assert (arch.era, arch.backend, arch.manifest["source_era"]) == ("bridge-2", "pytorch", "tf-modelmanager-1")
    conversion = arch.manifest["conversion"]
    assert (conversion["from_backend"], conversion["to_backend"]) == ("tensorflow", "pytorch")
    assert any(c.startswith("cbam_encoder=False") for c in conversion["choices"])
    spec = arch.primary.spec
    assert (spec.cbam_encoder, spec.c_outer, spec.outer_width) == (False, 4, 32)
    assert arch.intensity_scale == source.intensity_scale
    _assert_params_equal(arch.params, source.params)  # params.json carries the TF params, probe included
    for name, value in source.primary.tensors.items():  # every TF tensor carried bit for bit
        assert np.array_equal(arch.primary.tensors[name], value), name


@pytest.mark.parametrize("case", CONVERTIBLE_TF)
def test_converted_torch_archive_reproduces_the_tf_golden(
    fixtures_dir: Path, converted: dict[str, dict[str, Path]], case: str
) -> None:
    pt = pytest.importorskip("converters.pytorch.network")
    reassembly = pytest.importorskip("ptycho_bridge.spec.reassembly")
    from ptycho_bridge.spec.conventions import golden_canonical_input

    arch = read_archive(converted[case]["torch"])
    golden = dict(np.load(fixtures_dir / case / "golden.npz"))
    x_norm = golden_canonical_input(golden, "tensorflow", arch.intensity_scale)
    obj = pt.run(pt.build_module(arch.primary.spec, arch.primary.tensors), x_norm)
    spec = arch.primary.spec
    out = reassembly.reassemble(obj, golden["positions"], N=spec.N, padded_size=spec.padded_size,
                                object_big=spec.object_big)
    regions = reassembly.compare_regions(out, golden["output"])
    for region in ("centre", "border"):
        r = regions[region]
        assert r["scaled_err"] <= TOL, f"{case} {region}: {r['max_abs_err']:.3g} = {r['scaled_err']:.3g}·max|golden|"


@pytest.mark.parametrize("case", CONVERTIBLE_TF)
def test_torch_legacy_members_alone_describe_the_same_network(
    converted: dict[str, dict[str, Path]], tmp_path: Path, case: str
) -> None:
    """What upstream's torch loader reads (manifest.dill, model.pth, params.dill, metadata) agrees with the manifest."""
    arch = read_archive(converted[case]["torch"])
    legacy = read_archive(legacy_only(converted[case]["torch"], tmp_path / "legacy.zip"))
    assert legacy.era == "torch-bundle-2" and legacy.warnings == [] and legacy.primary.warnings == []
    assert legacy.primary.spec == NetworkSpec(**{**arch.primary.spec.to_dict(), "padded_size": None})
    _assert_tensors_identical(legacy, arch)
    assert legacy.intensity_scale == arch.intensity_scale
    assert legacy.models["autoencoder"].sentinel


@pytest.mark.parametrize("gridsize", [1, 2])
def test_torch_output_structure_matches_upstream_fixture(
    fixtures_dir: Path, converted: dict[str, dict[str, Path]], gridsize: int
) -> None:
    ours = SafeZip(converted[f"tf_N64_gs{gridsize}"]["torch"], label="ours")
    ref = SafeZip(fixtures_dir / f"torch_N64_gs{gridsize}" / "wts.h5.zip", label="upstream")
    with ours, ref:
        legacy = {n for n in ours.names() if n not in ("manifest.json", "params.json") and not n.endswith("weights.h5")}
        assert legacy == set(ref.names())
        sd, ref_sd = (read_torch(z, "diffraction_to_obj/model.pth") for z in (ours, ref))
        want = {k: v.shape for k, v in ref_sd.items() if ATTENTION not in k}
        assert list(sd) == list(want)
        if gridsize == 2:  # same c_outer (4) on both sides: every shape equal
            assert {k: v.shape for k, v in sd.items()} == want
        meta, ref_meta = (read_torch(z, "torch_scaling_metadata.pt") for z in (ours, ref))
        assert list(meta) == list(ref_meta)
        for section in ("data_config", "model_config", "training_config", "inference_config"):
            assert list(meta[section]) == list(ref_meta[section]), section
        params, ref_params = (read_pickle(z, "diffraction_to_obj/params.dill") for z in (ours, ref))
        assert list(params) == list(ref_params)


def test_tf_n128_probe_big_is_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    with pytest.raises(ConversionRefused) as info:
        convert_archive(fixtures_dir / "tf_N128_gs1" / "wts.h5.zip", "pytorch", out)
    assert info.value.field == "probe_big"
    assert "N=128" in str(info.value) and "16" in str(info.value) and "32" in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# -- torch → TF --------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["torch_N64_gs1/wts.h5.zip", "torch_N64_gs2/wts.h5.zip", "torch_N64_gs1/lightning.ckpt"])
def test_upstream_torch_fixtures_are_refused_for_cbam(fixtures_dir: Path, tmp_path: Path, source: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConversionRefused) as info:
        convert_archive(fixtures_dir / source, "tensorflow", out)
    assert info.value.field == "cbam_encoder" and info.value.value is True
    assert str(info.value).startswith("cbam_encoder=True: TF has no attention modules; the networks are not equivalent")
    assert "export-onnx" in str(info.value) and "--engine onnx" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", CONVERTIBLE_TF)
def test_torch_without_cbam_converts_to_tf_exactly(converted: dict[str, dict[str, Path]], case: str) -> None:
    """TF → torch → TF: the original TF network, tensors and params, bit for bit."""
    back = read_archive(converted[case]["tf"])
    original = read_archive(converted[case]["source"])
    assert validate_path(converted[case]["tf"])["valid"]
    assert (back.backend, back.manifest["source_era"]) == ("tensorflow", "bridge-2")
    assert back.manifest["conversion"]["from_backend"] == "pytorch"
    assert back.primary.spec == original.primary.spec
    _assert_tensors_identical(back, original)
    _assert_params_equal(back.params, original.params)
    assert back.intensity_scale == original.intensity_scale


@pytest.mark.parametrize("case", CONVERTIBLE_TF)
def test_tf_legacy_members_alone_read_as_the_original_tf_archive(
    converted: dict[str, dict[str, Path]], tmp_path: Path, case: str
) -> None:
    legacy = read_archive(legacy_only(converted[case]["tf"], tmp_path / "legacy.zip"))
    original = read_archive(converted[case]["source"])
    assert legacy.era == "tf-modelmanager-1" and legacy.primary.spec == original.primary.spec
    _assert_tensors_identical(legacy, original)
    assert legacy.intensity_scale == original.intensity_scale


@pytest.mark.parametrize("case", CONVERTIBLE_TF)
def test_torch_round_trip_through_tf_is_bit_identical(converted: dict[str, dict[str, Path]], case: str) -> None:
    """torch (no CBAM) → TF → torch: canonical tensors, params, torch config and legacy state_dict unchanged."""
    first, third = (read_archive(converted[case][k]) for k in ("torch", "torch3"))
    assert third.primary.spec == first.primary.spec
    _assert_tensors_identical(third, first)
    _assert_params_equal(third.params, first.params)
    assert third.torch_config == first.torch_config
    with SafeZip(converted[case]["torch"], label="a") as a, SafeZip(converted[case]["torch3"], label="b") as b:
        for member in ("diffraction_to_obj/model.pth", "torch_scaling_metadata.pt", "diffraction_to_obj/params.dill"):
            assert a.read(member) == b.read(member), member


# -- the refusal matrix on synthetic specs -----------------------------------------------------------
def _arch(spec: NetworkSpec, backend: str) -> BridgeArchive:
    entry = ModelEntry("diffraction_to_obj", spec, {}, {})
    return BridgeArchive(path="synthetic", era="bridge-2", backend=backend, params={},
                         models={"diffraction_to_obj": entry}, intensity_scale=10.0)


def _tf(**kw: Any) -> NetworkSpec:
    return tf_spec(**{"N": 64, "gridsize": 1, "n_filters_scale": 1, "object_big": True, "probe_big": True,
                      "pad_object": True, "amp_activation": "sigmoid", "padded_size": 74, **kw})


def _torch(**kw: Any) -> NetworkSpec:
    base = dict(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                amp_activation="sigmoid", channels_in=1, channels_out=1, c_outer=4, outer_width=32)
    return NetworkSpec(**{**base, **kw})


@pytest.mark.parametrize("spec,field,fragment", [
    (_tf(pad_object=False), "pad_object", "pad_object=False"),
    (_tf(amp_activation="softplus"), "amp_activation", "'softplus'"),
    (_tf(amp_activation="relu"), "amp_activation", "'relu'"),
    (_tf(use_polar=False), "use_polar", "use_polar=False"),
    (_tf(N=256, padded_size=266), "probe_big", "N=256"),
    (_tf(object_big=False, gridsize=2, padded_size=78), "object_big", "gridsize=2"),
])
def test_tf_to_torch_refusals(spec: NetworkSpec, field: str, fragment: str) -> None:
    with pytest.raises(ConversionRefused) as info:
        plan_conversion(_arch(spec, "tensorflow"), "pytorch")
    assert info.value.field == field and fragment in str(info.value)


@pytest.mark.parametrize("spec,field,fragment", [
    (_torch(cbam_bottleneck=True), "cbam_bottleneck", "TF has no attention"),
    (_torch(batch_norm=True), "batch_norm", "batch_norm=True"),
    (_torch(c_outer=1), "c_outer", "c_outer=1"),  # upstream torch's default at gridsize 1
    (_torch(N=128), "outer_width", "N=128"),
    (_torch(object_big=False, gridsize=2, channels_in=1), "object_big", "gridsize=2"),
])
def test_torch_to_tf_refusals(spec: NetworkSpec, field: str, fragment: str) -> None:
    with pytest.raises(ConversionRefused) as info:
        plan_conversion(_arch(spec, "pytorch"), "tensorflow")
    assert info.value.field == field and fragment in str(info.value)


def test_same_backend_and_unknown_target_are_refused() -> None:
    with pytest.raises(ConversionRefused, match="migrate"):
        plan_conversion(_arch(_tf(), "tensorflow"), "tensorflow")
    with pytest.raises(ConversionRefused, match="onnx"):
        plan_conversion(_arch(_tf(), "tensorflow"), "onnx")


def test_matrix_covers_the_documented_conditions() -> None:
    """../shared/docs/upstream-architecture.md §3.2 / §6: every refusal condition has a row, in the right direction."""
    assert {(target, r.field) for target in ("pytorch", "tensorflow") for r in RULES[target]} >= {
        ("pytorch", f) for f in ("pad_object", "amp_activation", "use_polar", "probe_big", "object_big")
    } | {("tensorflow", f) for f in ("cbam_encoder", "cbam_bottleneck", "batch_norm", "c_outer", "outer_width")}


# -- accepted synthetic networks: the converted archive computes the same function -------------------
def _write_tf_archive(path: Path, spec: NetworkSpec, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {n: (rng.standard_normal(s) * np.sqrt(2.0 / max(1, int(np.prod(s[1:]))))).astype(np.float32)
               for n, s in expected_tensors(spec).items()}
    params = {"N": spec.N, "gridsize": spec.gridsize, "n_filters_scale": spec.n_filters_scale,
              "object.big": spec.object_big, "probe.big": spec.probe_big, "pad_object": spec.pad_object,
              "amp_activation": spec.amp_activation, "offset": 4, "max_position_jitter": 10,
              "intensity_scale": 7.5, "probe": np.ones((spec.N, spec.N, 1), np.complex64), "_version": "1.0"}
    return write_archive(path, backend="tensorflow", source_era="sample",
                         models={"diffraction_to_obj": ModelToWrite(spec, tensors)}, params=params, intensity_scale=7.5)


@pytest.mark.parametrize("kw", [
    {"N": 128, "probe_big": False},  # outer branch unused: zero-filled on the torch side
    {"amp_activation": "swish", "n_filters_scale": 2},  # c_outer override at nfs=2 (fraction 0.0625)
    {"object_big": False},
])
def test_accepted_tf_networks_compute_the_same_function_in_torch(tmp_path: Path, kw: dict[str, Any]) -> None:
    pt = pytest.importorskip("converters.pytorch.network")
    spec = _tf(**{**kw, "padded_size": tf_padded_size(kw.get("N", 64), 1, 4, 10)})
    source = read_archive(_write_tf_archive(tmp_path / "tf.zip", spec, seed=11))
    out = convert_archive(tmp_path / "tf.zip", "pytorch", tmp_path / "torch.zip")
    arch = read_archive(out)
    assert validate_path(out)["valid"]
    target = arch.primary.spec
    if not spec.probe_big:
        zeros = [n for n in expected_tensors(target) if n not in source.primary.tensors]
        assert zeros and all(not arch.primary.tensors[n].any() for n in zeros)
        assert any("filled with zeros" in c for c in arch.manifest["conversion"]["choices"])
    x = np.random.default_rng(5).random((1, spec.channels_in, spec.N, spec.N), dtype=np.float32)
    want = pt.run(pt.build_module(spec, source.primary.tensors), x)
    got = pt.run(pt.build_module(target, arch.primary.tensors), x)
    assert np.array_equal(got, want)
    if spec.amp_activation == "swish":
        assert arch.torch_config["model_config"]["amp_activation"] == "silu"
    back = read_archive(convert_archive(out, "tensorflow", tmp_path / "back.zip"))
    assert back.primary.spec == spec
    _assert_tensors_identical(back, source)


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_convert_json_and_refusal(fixtures_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(main, ["convert", str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"), "--to", "pytorch",
                               "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["to_backend"] == "pytorch" and doc["output"] == str(out / "wts.h5.zip")
    assert doc["network"]["c_outer"] == 4 and doc["choices"]
    assert (out / "wts.h5.zip").is_file()

    again = runner.invoke(main, ["convert", str(fixtures_dir / "tf_N64_gs1"), "--to", "pytorch", "-o", str(out)])
    assert again.exit_code == 1 and "exists" in again.stderr

    refused = runner.invoke(main, ["convert", str(fixtures_dir / "torch_N64_gs2"), "--to", "tensorflow",
                                   "-o", str(tmp_path / "tf.zip")])
    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cbam_encoder=True")
    assert not (tmp_path / "tf.zip").exists()

    usage = runner.invoke(main, ["convert", str(out), "--to", "onnx", "-o", str(tmp_path / "x.zip")])
    assert usage.exit_code == 2


def test_torch_bundle_without_probe_gets_a_recorded_placeholder_probe_for_tf(
    converted: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    """A plain torch bundle carries no probe; upstream's TF factory needs params['probe'] to build its models."""
    bundle = legacy_only(converted["tf_N64_gs1"]["torch"], tmp_path / "bundle.zip")
    source = read_archive(bundle)
    assert source.era == "torch-bundle-2" and "probe" not in source.params
    out = convert_archive(bundle, "tensorflow", tmp_path / "tf.zip")
    result = read_archive(out)
    assert any("placeholder probe" in c for c in result.manifest["conversion"]["choices"])
    assert "probe" not in result.params  # params.json keeps the source parameters unchanged
    legacy = read_archive(legacy_only(out, tmp_path / "tf-legacy.zip"))
    probe = legacy.params["probe"]
    N = result.primary.spec.N
    assert probe.dtype == np.complex64 and probe.shape == (N, N, 1) and np.all(probe == 1)
