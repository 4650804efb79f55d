"""``pack``: upstream's Lightning checkpoint + training scale → an archive equal in structure to upstream's bundle."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from converters.pytorch.torchzip import load_torch_bytes, torch_zip_bytes
from ptycho_bridge.cli import main
from ptycho_bridge.errors import BridgeError, ConversionRefused
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safepickle import load
from ptycho_bridge.ops.diff import diff_archives
from ptycho_bridge.ops.engines import load_engine
from ptycho_bridge.ops.pack import pack
from ptycho_bridge.spec.conventions import golden_canonical_input
from tests._support import decoded_params, read_member

SCALE = 988.2117919921875
CASE = "torch_N64_gs1"


@pytest.fixture(scope="module")
def packed(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "wts.h5.zip"
    result = CliRunner().invoke(main, ["pack", str(fixtures_dir / CASE / "lightning.ckpt"), "-o", str(out),
                                       "--intensity-scale", str(SCALE), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    from ptycho_bridge.schema import schema_errors

    assert not schema_errors("pack-report", doc)
    assert doc["intensity_scale"] == SCALE and doc["scale_source"] == "--intensity-scale"
    return out


def test_packed_torch_output_equals_golden(packed: Path, fixtures_dir: Path) -> None:
    arch = read_archive(packed)
    golden = dict(np.load(fixtures_dir / CASE / "golden.npz"))
    out = load_engine("torch", arch.primary.spec, arch.primary.tensors).run(
        golden_canonical_input(golden, "pytorch", None))
    assert np.abs(out - golden["output"]).max() <= 1e-5 * np.abs(golden["output"]).max()


def test_packed_legacy_members_have_the_bundle_structure(packed: Path, fixtures_dir: Path) -> None:
    bundle = fixtures_dir / CASE / "wts.h5.zip"
    with zipfile.ZipFile(bundle) as zb, zipfile.ZipFile(packed) as zp:
        legacy = set(zb.namelist())
        assert legacy <= set(zp.namelist())
        for name in sorted(legacy):
            a, b = zp.read(name), zb.read(name)
            if name.endswith(".dill"):
                pa, pb_ = load(a, member=name), load(b, member=name)
                assert list(pa) == list(pb_), name  # same keys, same order
                continue
            ta, tb = load_torch_bytes(a, label=name), load_torch_bytes(b, label=name)
            assert list(ta) == list(tb), name
            for key, value in tb.items():
                if isinstance(value, dict):  # the torch configs
                    assert set(ta[key]) == set(value), f"{name}:{key}"
                elif isinstance(value, np.ndarray):  # state_dict: same shapes, dtypes and values
                    assert ta[key].shape == value.shape and ta[key].dtype == value.dtype
                    assert np.array_equal(ta[key], value), f"{name}:{key}"
    assert load(read_member(packed, "diffraction_to_obj/params.dill"), member="p")["intensity_scale"] == SCALE
    report = diff_archives(read_archive(packed), read_archive(bundle), atol=0.0)
    for model in report["models"]:  # no tensor or network difference (params differ: upstream's run values)
        assert model["status"] == "same", model
    assert {m["name"]: m["compared"] for m in report["models"]} == {"diffraction_to_obj": 63, "autoencoder": 0}


def test_save_pytorch_folder_needs_no_option(fixtures_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes((fixtures_dir / CASE / "lightning.ckpt").read_bytes())
    (folder / "pytorch_manifest.json").write_text(json.dumps({
        "backend": "pytorch", "checkpoint": "model.ckpt", "version": "1.0", "notes": "",
        "params_cfg_snapshot": {"N": 64, "gridsize": 1, "intensity_scale": SCALE, "nepochs": 1}}))
    result = pack(folder, tmp_path / "out.zip")
    assert result.source_kind == "save_pytorch-folder" and result.intensity_scale == SCALE
    assert "params_cfg_snapshot" in result.scale_source
    assert decoded_params(tmp_path / "out.zip")["nepochs"] == 1


def test_bare_state_dict_with_params_file(fixtures_dir: Path, tmp_path: Path) -> None:
    bundle = fixtures_dir / CASE / "wts.h5.zip"
    state = load_torch_bytes(read_member(bundle, "diffraction_to_obj/model.pth"), label="model.pth")
    (tmp_path / "model.pth").write_bytes(torch_zip_bytes(state, prefix="model"))
    params = decoded_params(bundle)
    (tmp_path / "params.dill").write_bytes(pickle.dumps(params, protocol=4))
    result = pack(tmp_path / "model.pth", tmp_path / "out.zip", params_path=tmp_path / "params.dill")
    assert result.source_kind == "state-dict" and result.scale_source == "--params params.dill"
    assert all(m["status"] == "same" for m in diff_archives(read_archive(tmp_path / "out.zip"), read_archive(bundle))["models"])
    with pytest.raises(ConversionRefused, match="--params"):  # a bare state_dict records neither N nor scale
        pack(tmp_path / "model.pth", tmp_path / "out2.zip", intensity_scale=SCALE)


def _ckpt_with(fixtures_dir: Path, edit: Any) -> bytes:
    zf_data = (fixtures_dir / CASE / "lightning.ckpt").read_bytes()
    ckpt = load_torch_bytes(zf_data, label="ckpt")
    data = {"state_dict": dict(ckpt["state_dict"]), "hyper_parameters": ckpt["hyper_parameters"]}
    edit(data["state_dict"])
    return torch_zip_bytes(data, prefix="archive")


BAD = {
    "missing key": (lambda sd: sd.pop("model.autoencoder.decoder_amp.amp.conv1.bias"), "missing tensor"),
    "extra key": (lambda sd: sd.__setitem__("model.surprise.weight", np.zeros(2, np.float32)), "unexpected key"),
    "wrong shape": (lambda sd: sd.__setitem__("model.autoencoder.decoder_amp.amp.conv1.bias", np.zeros(3, np.float32)),
                    "has shape"),
    "NaN weights": (lambda sd: sd["model.autoencoder.decoder_amp.amp.conv1.bias"].fill(np.nan), "non-finite"),
}


@pytest.mark.parametrize("label", sorted(BAD))
def test_bad_checkpoint_is_refused_and_nothing_written(label: str, fixtures_dir: Path, tmp_path: Path) -> None:
    edit, message = BAD[label]
    ckpt = tmp_path / "bad.ckpt"
    ckpt.write_bytes(_ckpt_with(fixtures_dir, edit))
    result = CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "out.zip"), "--intensity-scale", "2"])
    assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output, result.output
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


@pytest.mark.parametrize("args,message", [
    (["--intensity-scale", "0"], "positive finite"),
    (["--intensity-scale", "-1"], "positive finite"),
    ([], "--intensity-scale"),
])
def test_scale_errors(args: list[str], message: str, fixtures_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["pack", str(fixtures_dir / CASE / "lightning.ckpt"), "-o",
                                       str(tmp_path / "o.zip"), *args])
    assert result.exit_code == 1 and message in result.output and not (tmp_path / "o.zip").exists()


def test_options_are_exclusive(fixtures_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{}")
    result = CliRunner().invoke(main, ["pack", str(fixtures_dir / CASE / "lightning.ckpt"), "-o",
                                       str(tmp_path / "o.zip"), "--intensity-scale", "2", "--params",
                                       str(tmp_path / "p.json")])
    assert result.exit_code == 2 and "mutually exclusive" in result.output
    with pytest.raises(BridgeError):
        pack(fixtures_dir / CASE / "lightning.ckpt", tmp_path / "o.zip", intensity_scale=2.0,
             params_path=tmp_path / "p.json")


def test_migrate_of_a_ckpt_points_to_pack(fixtures_dir: Path, tmp_path: Path) -> None:
    from ptycho_bridge.ops.migrate import migrate

    plan, _ = migrate(fixtures_dir / CASE / "lightning.ckpt", tmp_path / "m.zip", dry_run=True)
    assert any("ptycho-bridge pack" in note for note in plan.notes)


def test_hostile_params_file_is_never_executed(fixtures_dir: Path, tmp_path: Path) -> None:
    from tests._support import evil_dumps, evil_payloads

    sentinel = tmp_path / "pwned"
    params = {"intensity_scale": SCALE, "N": 64, **{f"evil_{i}": p for i, p in enumerate(evil_payloads(sentinel).values())}}
    (tmp_path / "params.dill").write_bytes(evil_dumps(params))
    pack(fixtures_dir / CASE / "lightning.ckpt", tmp_path / "o.zip", params_path=tmp_path / "params.dill")
    assert not sentinel.exists()
    assert not any(k.startswith("evil_") for k in read_archive(tmp_path / "o.zip").params)


def test_params_contradicting_the_weights_are_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text(json.dumps({"intensity_scale": SCALE, "gridsize": 2}))
    with pytest.raises(BridgeError, match="gridsize"):
        pack(fixtures_dir / CASE / "lightning.ckpt", tmp_path / "o.zip", params_path=tmp_path / "params.json")
    assert not (tmp_path / "o.zip").exists()
