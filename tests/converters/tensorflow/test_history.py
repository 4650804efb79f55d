"""Upstream's earlier TF networks (``ptycho_bridge.spec.history``, ``docs/upstream-history.md``), ``.keras`` era.

Two sources of truth, neither of them our engines:

- upstream's own archive of the one-channel-amplitude variant (``upstream-history/keras_cb46e91_N64_gs2_amp1``,
  written and run by upstream at cb46e91): read, validated, run against that commit's golden, migrated;
- archives of the variants written by our ``.keras`` writer at N 64/128 and gridsize 1/2, whose per-patch
  output is checked against the float64 numpy transcription of the formulas (``tests/numpy_reference.py``), in
  which the one-channel amplitude simply broadcasts over the phase channels.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.tensorflow import keras_config as kc
from converters.tensorflow.write import tf_legacy_members
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.ops.diff import diff_archives
from ptycho_bridge.ops.migrate import migrate
from ptycho_bridge.ops.report import inspect_report, validate_path
from ptycho_bridge.schema import schema_errors
from ptycho_bridge.spec import reassembly
from ptycho_bridge.spec.conventions import golden_canonical_input
from ptycho_bridge.spec.history import today_form
from ptycho_bridge.spec.network import NetworkSpec, tf_padded_size, tf_spec
from tests._support import HISTORY_DIR, legacy_only, zip_of
from tests.numpy_reference import random_tensors, reference

CB46 = HISTORY_DIR / "keras_cb46e91_N64_gs2_amp1"
D2O = "diffraction_to_obj"
TOL = 1e-5


@pytest.fixture(scope="module")
def cb46() -> Path:
    if not (CB46 / "wts.h5.zip").is_file():
        pytest.skip(f"upstream-history fixture not found at {CB46}")
    return CB46


def _engine_out(name: str, spec: NetworkSpec, tensors: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    pytest.importorskip({"onnx": "onnxruntime", "torch": "torch", "keras": "tensorflow"}[name])
    from ptycho_bridge.ops.engines import load_engine

    return np.asarray(load_engine(name, spec, tensors).run(x))


def _golden_trimmed(engine: str, arch: Any, golden: Any) -> np.ndarray:
    entry = arch.primary
    x = golden_canonical_input(golden, "tensorflow", arch.intensity_scale)
    obj = _engine_out(engine, entry.spec, dict(entry.tensors), x)
    return reassembly.reassemble(obj.astype(np.complex64), golden["positions"], N=entry.spec.N,
                                 padded_size=entry.spec.padded_size, centre=entry.reassembly_centring)


def _assert_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    err = float(np.abs(got - ref).max())
    assert err <= TOL * float(np.abs(ref).max()), f"{what}: max abs err {err:.3g} vs max|ref| {np.abs(ref).max():.3g}"


# -- upstream's own archive of the variant ---------------------------------------------------------
def test_cb46e91_network_is_derived_from_the_archive(cb46: Path) -> None:
    arch = read_archive(cb46 / "wts.h5.zip")
    entry = arch.primary
    spec = entry.spec
    # the config's Conv2D filters: amp heads 1, phase heads 4 (golden.json "network_shapes")
    assert (spec.gridsize, spec.channels_out, spec.amp_channels) == (2, 4, 1)
    assert entry.tensors["amp.conv1.weight"].shape == (1, 28, 3, 3)
    assert entry.tensors["phase.conv2.weight"].shape == (4, 32, 3, 3)
    # CombineComplexLayer without use_polar (tf.complex(amp, phase)); ReassemblePatchesLayer without padded_size
    assert spec.use_polar is False and entry.reassembly_centring is False
    assert spec.padded_size == 78  # from params.dill: N + (gridsize-1)·offset + jitter
    report = inspect_report(read_archive(cb46 / "wts.h5.zip", lazy_arrays=True))
    assert schema_errors("inspect-report", json.loads(json.dumps(report))) == []
    keys = [v["key"] for v in report["network"]["variants"]]
    assert keys == ["amp_head_shared", "combine_cartesian", "reassembly_uncentred"]
    assert "shared across the 4 patches" in report["network"]["variants"][0]["text"]
    result = validate_path(cb46 / "wts.h5.zip")
    assert result["valid"], result["errors"]


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_cb46e91_engines_reproduce_upstreams_golden(cb46: Path, engine: str) -> None:
    arch = read_archive(cb46 / "wts.h5.zip")
    golden = np.load(cb46 / "golden.npz")
    got = _golden_trimmed(engine, arch, golden)
    for region, err in reassembly.compare_regions(got, golden["output"]).items():  # centre, border, all
        assert err["scaled_err"] <= TOL, (engine, region, err)


def test_cb46e91_golden_rules_out_todays_semantics(cb46: Path) -> None:
    """The derivation matters: today's polar combine or today's centring do not give upstream's numbers."""
    arch = read_archive(cb46 / "wts.h5.zip")
    entry = arch.primary
    golden = np.load(cb46 / "golden.npz")
    x = golden_canonical_input(golden, "tensorflow", arch.intensity_scale)
    ref = golden["output"]
    for spec, centre in ((replace(entry.spec, use_polar=True), False), (entry.spec, True)):
        obj = _engine_out("onnx", spec, dict(entry.tensors), x).astype(np.complex64)
        out = reassembly.reassemble(obj, golden["positions"], N=64, padded_size=78, centre=centre)
        assert float(np.abs(out - ref).max()) > 0.1 * float(np.abs(ref).max())


def test_cb46e91_parity_cli_against_the_golden(cb46: Path) -> None:
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from ptycho_bridge.cli import main

    res = CliRunner().invoke(main, ["parity", str(cb46 / "wts.h5.zip"), "--engines", "onnx", "--input",
                                    str(cb46 / "golden.npz"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    golden_rows = [c for c in report["comparisons"] if c["reference"] == "golden"]
    assert golden_rows and all(c["ok"] for c in golden_rows)


def test_cb46e91_migrates_keeping_its_network(cb46: Path, tmp_path: Path) -> None:
    out = tmp_path / "migrated.zip"
    plan, summary = migrate(cb46 / "wts.h5.zip", out)
    assert summary is not None and summary["equivalent"]
    # amp + i·phase cannot be re-expressed for today's factory (amp·exp(i·phase)): legacy kept byte-for-byte
    assert any("amp + i·phase" in n and "byte-for-byte" in n for n in plan.notes)
    with zipfile.ZipFile(cb46 / "wts.h5.zip") as src, zipfile.ZipFile(out) as dst:
        assert src.read(f"{D2O}/model.keras") == dst.read(f"{D2O}/model.keras")
    migrated = read_archive(out)
    assert migrated.era == "bridge-2"
    assert (migrated.primary.spec.amp_channels, migrated.primary.spec.use_polar) == (1, False)
    assert migrated.primary.reassembly_centring is False  # manifest 2.2 records it
    golden = np.load(cb46 / "golden.npz")
    _assert_close(_golden_trimmed("onnx", migrated, golden), golden["output"], "migrated onnx vs golden")


def test_our_writer_emits_cb46e91s_config(cb46: Path) -> None:
    arch = read_archive(cb46 / "wts.h5.zip")
    spec = arch.primary.spec
    with zipfile.ZipFile(cb46 / "wts.h5.zip") as zf:
        theirs = json.loads(zipfile.ZipFile(io.BytesIO(zf.read(f"{D2O}/model.keras"))).read("config.json"))
    ours = kc.keras_config(spec, reassembly_centring=False)

    def layers(doc: dict[str, Any]) -> dict[str, Any]:
        text = re.sub(r'"shared_object_id": \d+', '"shared_object_id": 0', json.dumps(doc))
        return {layer["name"]: layer for layer in json.loads(text)["config"]["layers"]}

    mine, upstream = layers(ours), layers(theirs)
    assert list(mine) == list(upstream)
    differ = [name for name in upstream if mine[name] != upstream[name]]
    # cb46e91 had not yet registered IntensityScaler under the 'ptycho>' package name
    assert differ == ["intensity_scaler"]
    assert upstream["intensity_scaler"]["registered_name"] == "IntensityScaler"
    assert {**mine["intensity_scaler"], "registered_name": "IntensityScaler"} == upstream["intensity_scaler"]


# -- variants written by our .keras writer, against the numpy reference ----------------------------
VARIANTS = [(64, 1, True), (64, 2, True), (128, 1, True), (128, 2, True), (64, 2, False)]


def _variant(N: int, gridsize: int, polar: bool) -> NetworkSpec:
    return tf_spec(N=N, gridsize=gridsize, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                   amp_activation="sigmoid", use_polar=polar, padded_size=tf_padded_size(N, gridsize, 4, 10),
                   amp_channels=1)


@pytest.mark.parametrize("N, gridsize, polar", VARIANTS)
def test_written_variant_reads_back_and_runs_as_the_numpy_reference(N: int, gridsize: int, polar: bool,
                                                                    tmp_path: Path) -> None:
    spec = _variant(N, gridsize, polar)
    assert spec.amp_channels == (1 if gridsize > 1 else None)  # at gridsize 1 the variant is today's network
    tensors = random_tensors(spec, seed=N + gridsize)
    members = tf_legacy_members(spec, tensors, {"offset": 4, "max_position_jitter": 10}, 988.2,
                                reassembly_centring=polar)
    arch = read_archive(zip_of(members, tmp_path / "wts.h5.zip"))
    entry = arch.primary
    assert entry.spec == spec and entry.reassembly_centring == polar
    assert all(np.array_equal(entry.tensors[k], v) for k, v in tensors.items())
    x = np.random.default_rng(gridsize).uniform(0, 1.5, (2, spec.channels_in, N, N)).astype(np.float32)
    ref = reference(spec, tensors, x)
    assert ref.shape == (2, spec.channels_out, N, N)
    if gridsize > 1 and polar:  # the broadcast: every patch has the same amplitude
        assert np.allclose(np.abs(ref[:, 0]), np.abs(ref[:, 1]))
    engines = ("onnx", "torch", "keras") if (N, gridsize, polar) == (64, 2, True) else ("onnx", "torch")
    for engine in engines:
        _assert_close(_engine_out(engine, entry.spec, dict(entry.tensors), x), ref, f"{engine} N={N} gs={gridsize}")


def test_today_form_is_the_same_function() -> None:
    spec = _variant(64, 2, True)
    tensors = random_tensors(spec, seed=7)
    wide, wide_tensors, notes = today_form(spec, tensors)
    assert wide.amp_channels is None and wide.head_channels("amp") == 4 and notes
    assert wide_tensors["amp.conv2.weight"].shape == (4, 32, 3, 3)
    assert all(np.array_equal(wide_tensors["amp.conv2.weight"][c], tensors["amp.conv2.weight"][0]) for c in range(4))
    x = np.random.default_rng(3).uniform(0, 1.5, (2, 4, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(_engine_out("onnx", wide, wide_tensors, x), _engine_out("onnx", spec, tensors, x))
    assert today_form(wide, wide_tensors)[2] == []  # today's network is left as it is


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'center_mask_layer:UserWarning")
def test_polar_variant_migrates_to_what_todays_loader_opens(tmp_path: Path) -> None:
    """A polar one-channel archive (upstream 2026-01-26 .. 2026-02-10): migrate widens the amp head in the
    legacy members, so the blank network today's factory builds accepts them (Keras replica of upstream's
    loader: load_model, then set_weights by position), with the same per-patch output."""
    spec = _variant(64, 2, True)
    tensors = random_tensors(spec, seed=11)
    src = zip_of(tf_legacy_members(spec, tensors, {"offset": 4, "max_position_jitter": 10}, 988.2),
                 tmp_path / "src.zip")
    out = tmp_path / "migrated.zip"
    plan, summary = migrate(src, out)
    assert summary is not None and summary["equivalent"]
    assert any("amplitude head widened from 1 to 4" in n for n in plan.notes)
    assert diff_archives(read_archive(src), read_archive(out), atol=0.0)["equivalent"]
    assert read_archive(out).primary.spec.amp_channels == 1  # canonical tensors keep the source's network
    with zipfile.ZipFile(out) as zf:
        legacy = {n: zf.read(n) for n in plan.legacy}
    legacy_arch = read_archive(zip_of(legacy, tmp_path / "legacy.zip"))
    assert legacy_arch.era == "tf-modelmanager-1" and legacy_arch.primary.spec.amp_channels is None
    x = np.random.default_rng(5).uniform(0, 1.5, (2, 4, 64, 64)).astype(np.float32)
    _assert_close(_engine_out("onnx", legacy_arch.primary.spec, dict(legacy_arch.primary.tensors), x),
                  _engine_out("onnx", spec, tensors, x), "legacy members vs source")
    keras = pytest.importorskip("keras")
    from tests.converters.tensorflow.test_keras_config import _replica

    stubs = _replica()
    model_keras = tmp_path / "model.keras"
    model_keras.write_bytes(legacy[f"{D2O}/model.keras"])
    loaded = keras.saving.load_model(model_keras, custom_objects={"CenterMaskLayer": stubs.CenterMask})
    blank = stubs.build(replace(spec, amp_channels=None))  # today's factory: amp heads gridsize² wide
    blank.set_weights(loaded.get_weights())  # positional; raises on any shape mismatch
    # the source's own one-channel model.keras is what today's loader cannot take
    model_keras.write_bytes(tf_legacy_members(spec, tensors, {}, 988.2)[f"{D2O}/model.keras"])
    loaded = keras.saving.load_model(model_keras, custom_objects={"CenterMaskLayer": stubs.CenterMask})
    with pytest.raises(ValueError):
        stubs.build(replace(spec, amp_channels=None)).set_weights(loaded.get_weights())


def _with_config(members: dict[str, bytes], edit: Any) -> dict[str, bytes]:
    """``members`` with ``diffraction_to_obj/model.keras``'s config.json passed through ``edit(config)``."""
    member = f"{D2O}/model.keras"
    with zipfile.ZipFile(io.BytesIO(members[member])) as inner:
        files = {n: inner.read(n) for n in inner.namelist()}
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as inner:
        for name, data in files.items():
            inner.writestr(name, data)
    return {**members, member: buf.getvalue()}


@pytest.mark.parametrize("head, filters, message", [
    ("phase", 1, r"params\.dill \(gridsize² with object\.big, else 1\) says 4 but .*config\.json \(phase head Conv2D "
                 r"filters\) says 1"),
    ("amp", 2, r"amp head's Conv2D filters are 2; upstream built 1 \(before c03673d"),
])
def test_head_widths_contradicting_params_are_refused(head: str, filters: int, message: str, tmp_path: Path) -> None:
    from ptycho_bridge.errors import SpecError

    spec = _variant(64, 2, True)
    members = tf_legacy_members(spec, random_tensors(spec, seed=1), {"offset": 4, "max_position_jitter": 10}, 988.2)
    from converters.tensorflow.keras_graph import analyse_config

    roles = {r.canonical: r.layer_name for r in analyse_config(kc.keras_config(spec), member="c").convs}

    def edit(config: dict[str, Any]) -> None:
        for layer in config["config"]["layers"]:
            if layer["name"] in (roles[f"{head}.conv1"], roles[f"{head}.conv2"]):
                layer["config"]["filters"] = filters

    with pytest.raises(SpecError, match=message):
        read_archive(zip_of(_with_config(members, edit), tmp_path / "wts.h5.zip"))


def test_unmasked_outer_branch_is_read_from_the_config(tmp_path: Path) -> None:
    """Upstream before a6e1019 (2024-08-20) added the outer branch without the border mask: a config whose heads
    have no CenterMaskLayer/Multiply reads as ``outer_mask=False`` and runs as the reference says."""
    spec = _variant(64, 2, True)
    tensors = random_tensors(spec, seed=13)
    members = tf_legacy_members(spec, tensors, {"offset": 4, "max_position_jitter": 10}, 988.2)

    def unmask(config: dict[str, Any]) -> None:
        layers = config["config"]["layers"]
        dropped = {layer["name"] for layer in layers if layer["class_name"] in ("CenterMaskLayer", "Multiply")}
        assert len(dropped) == 4  # a mask and a multiply per head
        text = json.dumps([layer for layer in layers if layer["name"] not in dropped])
        for head, silu in (("", "silu"), ("_1", "silu_1")):  # add(x1, multiply(silu, mask)) -> add(x1, silu)
            text = text.replace(f'"keras_history": ["multiply{head}", 0, 0]', f'"keras_history": ["{silu}", 0, 0]')
        config["config"]["layers"] = json.loads(text)

    members = _with_config(members, unmask)
    entry = read_archive(zip_of(members, tmp_path / "wts.h5.zip")).primary
    assert entry.spec == replace(spec, outer_mask=False)
    keys = [v["key"] for v in inspect_report(read_archive(tmp_path / "wts.h5.zip"))["network"]["variants"]]
    assert "outer_unmasked" in keys
    x = np.random.default_rng(9).uniform(0, 1.5, (1, 4, 64, 64)).astype(np.float32)
    ref = reference(entry.spec, tensors, x)
    assert float(np.abs(ref - reference(spec, tensors, x)).max()) > 1e-3  # the mask matters for these weights
    _assert_close(_engine_out("onnx", entry.spec, dict(entry.tensors), x), ref, "onnx unmasked")


def test_polar_variant_converts_to_torch_with_the_widened_head(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from ptycho_bridge.ops.convert import convert_archive

    spec = _variant(64, 2, True)
    tensors = random_tensors(spec, seed=17)
    src = zip_of(tf_legacy_members(spec, tensors, {"offset": 4, "max_position_jitter": 10}, 988.2),
                 tmp_path / "src.zip")
    out = convert_archive(src, "pytorch", tmp_path / "torch.zip")
    converted = read_archive(out)
    assert converted.backend == "pytorch" and converted.primary.spec.amp_channels == 1
    assert any("widened" in c for c in converted.manifest["conversion"]["choices"])
    bundle = read_archive(legacy_only(out, tmp_path / "bundle.zip"))  # what upstream's torch loader reads
    assert bundle.era == "torch-bundle-2" and bundle.primary.spec.amp_channels is None
    x = np.random.default_rng(21).uniform(0, 1.5, (2, 4, 64, 64)).astype(np.float32)
    _assert_close(_engine_out("torch", bundle.primary.spec, dict(bundle.primary.tensors), x),
                  reference(spec, tensors, x), "torch bundle vs reference")


def test_cartesian_combine_is_refused_by_torch_targets_naming_use_polar(cb46: Path, tmp_path: Path) -> None:
    from ptycho_bridge.errors import ConversionRefused
    from ptycho_bridge.ops.convert import convert_archive

    with pytest.raises(ConversionRefused, match="amp \\+ i·phase") as info:
        convert_archive(cb46 / "wts.h5.zip", "pytorch", tmp_path / "out.zip")
    assert info.value.field == "use_polar" and not (tmp_path / "out.zip").exists()
