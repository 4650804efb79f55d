"""Tests for ``ptycho-bridge migrate`` (ptycho_bridge/migrate.py) and bridge-2 checksum detection."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from ptycho_bridge import read_archive, schema_errors
from ptycho_bridge.cli import main
from ptycho_bridge.ops.sample import write_sample

CASES = ["tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1", "torch_N64_gs1", "torch_N64_gs2", "torch_N64_gs1/lightning.ckpt"]


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def migrated(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture migrated once through the CLI (exit 0 checked here)."""
    out = tmp_path_factory.mktemp("migrated")
    paths = {}
    for case in CASES:
        target = out / case.replace("/", "_").replace(".", "_") / "wts.h5.zip"
        code, stdout, stderr = _cli("migrate", str(fixtures_dir / case), "-o", str(target.parent))
        assert code == 0, stderr
        assert "verified" in stdout
        paths[case] = target
    return paths


# ---------------------------------------------------------------------------------------------------
# Every fixture: nothing lost, legacy bytes kept, output valid
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_migrated_equals_source_and_validates(fixtures_dir: Path, migrated: dict[str, Path], case: str) -> None:
    src, out = fixtures_dir / case, migrated[case]
    code, stdout, _ = _cli("diff", str(src), str(out), "--json")
    assert code == 0, stdout
    doc = json.loads(stdout)
    assert doc["equivalent"] and doc["b"]["era"] == "bridge-2"
    assert _cli("validate", str(out))[0] == 0
    code, stdout, _ = _cli("inspect", str(out), "--json", "--tensors")
    assert code == 0
    report = json.loads(stdout)
    assert schema_errors("inspect-report", report) == []
    assert report["era"] == "bridge-2" and report["source_era"] == read_archive(src).era


@pytest.mark.parametrize("case", CASES)
def test_parity_original_vs_migrated_passes(fixtures_dir: Path, migrated: dict[str, Path], case: str) -> None:
    """`parity ORIGINAL MIGRATED` on the fixture's golden input: same outputs, and both match the golden."""
    pytest.importorskip("onnxruntime")
    golden = fixtures_dir / case.split("/")[0] / "golden.npz"
    code, stdout, stderr = _cli("parity", str(fixtures_dir / case), str(migrated[case]), "--engines", "onnx",
                                "--input", str(golden), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["ok"] is True
    pairs = {(c["reference"], c["actual"]) for c in report["comparisons"]}
    assert ("A:onnx", "B:onnx") in pairs and ("golden", "B:onnx") in pairs, pairs
    assert all(c["ok"] for c in report["comparisons"])


@pytest.mark.parametrize("case", [c for c in CASES if not c.endswith(".ckpt")])
def test_legacy_members_kept_byte_for_byte(fixtures_dir: Path, migrated: dict[str, Path], case: str) -> None:
    source = _members(fixtures_dir / case / "wts.h5.zip")
    output = _members(migrated[case])
    for name, data in source.items():
        assert output[name] == data, name
    neutral = set(output) - set(source)
    models = json.loads(output["manifest.json"])["models"]
    assert neutral == {"manifest.json", "params.json"} | {f"{m}/weights.h5" for m, e in models.items() if "weights" in e}


def test_tf_migration_keeps_probe_and_notes_optimizer(fixtures_dir: Path, migrated: dict[str, Path]) -> None:
    src = read_archive(fixtures_dir / "tf_N64_gs1")
    out = read_archive(migrated["tf_N64_gs1"])
    assert set(out.params) == set(src.params)
    assert out.probe is not None and out.probe.dtype == src.probe.dtype and (out.probe == src.probe).all()
    manifest = out.manifest
    assert manifest["backend"] == "tensorflow" and manifest["source_era"] == "tf-modelmanager-1"
    assert manifest["models"]["autoencoder"]["payload"] == {"kind": "keras", "member": "autoencoder/model.keras"}
    notes = " ".join(manifest["models"]["diffraction_to_obj"]["notes"])
    assert "autoencoder/model.keras kept as-is, including its optimizer state (90 tensors; training only: `migrate --drop-optimizer` leaves it out)" in notes


def test_torch_migration_keeps_sentinel_and_configs(fixtures_dir: Path, migrated: dict[str, Path]) -> None:
    src = read_archive(fixtures_dir / "torch_N64_gs1")
    out = read_archive(migrated["torch_N64_gs1"])
    auto = out.models["autoencoder"]
    assert auto.sentinel and auto.spec is None and not auto.tensor_info
    assert out.manifest["models"]["autoencoder"]["payload"] == {
        "kind": "torch-sentinel", "member": "autoencoder/model.pth", "sentinel": "autoencoder"}
    assert out.torch_config == src.torch_config
    assert out.torch_config["data_config"]["grid_size"] == (1, 1)  # tuples survive params.json
    # upstream's torch loader reads model.pth, kept byte-for-byte (test_legacy_members_kept_byte_for_byte)
    assert out.manifest["members"]["autoencoder/model.pth"]["size"] == 1249


def test_lightning_migration_says_what_was_dropped(migrated: dict[str, Path]) -> None:
    out = read_archive(migrated["torch_N64_gs1/lightning.ckpt"])
    assert out.manifest["source_era"] == "lightning-ckpt" and out.backend == "pytorch"
    assert set(out.torch_config) >= {"model_config", "data_config", "hyper_parameters"}
    notes = " ".join(out.manifest["models"]["diffraction_to_obj"]["notes"])
    assert "optimizer state" in notes and "dropped" in notes


def test_torch_json_era_migrates(fixtures_dir: Path, tmp_path: Path) -> None:
    """A torch-manifest-v1 bundle (built from the real torch members): its manifest.json is kept renamed."""
    source = _members(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip")
    bundle = tmp_path / "json" / "wts.h5.zip"
    bundle.parent.mkdir()
    manifest = {"manifest_version": "torch-manifest-v1", "models": ["diffraction_to_obj", "autoencoder"],
                "version": "2.0-pytorch", "backend": "pytorch"}
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name in ("diffraction_to_obj", "autoencoder"):
            zf.writestr(f"{name}/params.json", json.dumps({"N": 64, "gridsize": 1, "C": 1}))
            zf.writestr(f"{name}/model.pth", source[f"{name}/model.pth"])
        zf.writestr("torch_scaling_metadata.pt", source["torch_scaling_metadata.pt"])
    out = tmp_path / "out.zip"
    code, _, stderr = _cli("migrate", str(bundle), "-o", str(out))
    assert code == 0, stderr
    kept = _members(out)
    assert kept["torch_manifest.json"] == json.dumps(manifest).encode()
    assert kept["diffraction_to_obj/model.pth"] == source["diffraction_to_obj/model.pth"]
    assert _cli("diff", str(bundle), str(out))[0] == 0
    assert read_archive(out).manifest["source_era"] == "torch-json-1"


# ---------------------------------------------------------------------------------------------------
# --dry-run, --force, refusals
# ---------------------------------------------------------------------------------------------------
def test_dry_run_writes_nothing_and_lists_real_sizes(fixtures_dir: Path, tmp_path: Path) -> None:
    before = _listing(tmp_path)
    code, stdout, _ = _cli("migrate", str(fixtures_dir / "torch_N64_gs2"), "-o", str(tmp_path / "out"), "--dry-run", "--json")
    assert code == 0 and _listing(tmp_path) == before
    plan = json.loads(stdout)
    assert plan["dry_run"] and not plan["written"] and plan["verified"] is None
    code, stdout, _ = _cli("migrate", str(fixtures_dir / "torch_N64_gs2"), "-o", str(tmp_path / "out"), "--json")
    assert code == 0
    written = _members(tmp_path / "out" / "wts.h5.zip")
    planned = {r["name"]: r["size"] for r in plan["members"]}
    assert set(planned) == set(written)
    for name, data in written.items():
        if name not in ("manifest.json",):  # the manifest carries its creation time
            assert planned[name] == len(data), name
    code, stdout, _ = _cli("migrate", str(fixtures_dir / "torch_N64_gs2"), "-o", str(tmp_path / "x"), "--dry-run")
    assert code == 0 and "dry run: nothing written" in stdout and "would write" in stdout
    assert not (tmp_path / "x").exists()


def test_refuses_existing_output_without_force(fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "wts.h5.zip"
    out.write_bytes(b"previous content")
    code, _, err = _cli("migrate", str(fixtures_dir / "torch_N64_gs1"), "-o", str(out))
    assert code == 1 and "exists" in err and "--force" in err
    assert out.read_bytes() == b"previous content"
    code, _, err = _cli("migrate", str(fixtures_dir / "torch_N64_gs1"), "-o", str(out), "--dry-run")
    assert code == 1 and out.read_bytes() == b"previous content"
    code, _, err = _cli("migrate", str(fixtures_dir / "torch_N64_gs1"), "-o", str(out), "--force")
    assert code == 0, err
    assert _cli("validate", str(out))[0] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["wts.h5.zip"]  # no temp files left behind


def test_refuses_bridge_2_source(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "sample.zip")
    code, _, err = _cli("migrate", str(sample), "-o", str(tmp_path / "out.zip"))
    assert code == 1 and "already a bridge-2 archive" in err and "sample.zip" in err
    assert not (tmp_path / "out.zip").exists()


# ---------------------------------------------------------------------------------------------------
# Checksums: any single flipped byte of any member of a migrated archive is caught
# ---------------------------------------------------------------------------------------------------
def _rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> None:
    """Copy a zip, replacing member contents (CRC-32 recomputed, so only sha256 can notice)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info))
            new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            new.compress_type = info.compress_type
            new.external_attr = info.external_attr
            zout.writestr(new, data)


def _flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x01
    return bytes(out)


def _tensor_offset(weights: bytes, name: str) -> int:
    with h5py.File(io.BytesIO(weights), "r") as f:
        return int(f[f"tensors/{name}"].id.get_offset())


@pytest.mark.parametrize("case", ["torch_N64_gs1", "tf_N64_gs1"])
def test_single_byte_flip_in_any_member_is_detected(migrated: dict[str, Path], tmp_path: Path, case: str) -> None:
    src = migrated[case]
    members = _members(src)
    manifest = json.loads(members["manifest.json"])
    tried = 0
    for name in manifest["members"]:  # every member except manifest.json itself (it holds the checksums)
        data = members[name]
        positions = {0, len(data) // 2, len(data) - 1}
        if name.endswith("weights.h5"):
            model = name.split("/")[0]
            first = next(iter(manifest["models"][model]["tensors"]))
            positions.add(_tensor_offset(data, first) + 3)
        for pos in sorted(positions):
            bad = tmp_path / f"flip-{tried}.zip"
            _rewrite(src, bad, {name: _flip(data, pos)})
            code, stdout, _ = _cli("validate", str(bad), "--json")
            assert code == 1, (name, pos)
            report = json.loads(stdout)["archives"][0]
            assert not report["valid"] and name in report["errors"][0], (name, pos, report["errors"])
            bad.unlink()
            tried += 1
    assert tried >= 3 * len(manifest["members"])


def test_tensor_checksum_names_the_tensor(migrated: dict[str, Path], tmp_path: Path) -> None:
    """A flipped weight whose member checksum was also forged is still caught by the tensor sha256."""
    import hashlib

    src = migrated["torch_N64_gs1"]
    members = _members(src)
    manifest = json.loads(members["manifest.json"])
    weights_name = "diffraction_to_obj/weights.h5"
    tensor = "encoder.1.conv2.weight"
    bad_weights = _flip(members[weights_name], _tensor_offset(members[weights_name], tensor) + 17)
    manifest["members"][weights_name]["sha256"] = hashlib.sha256(bad_weights).hexdigest()
    bad = tmp_path / "forged.zip"
    _rewrite(src, bad, {weights_name: bad_weights, "manifest.json": json.dumps(manifest, indent=1).encode()})
    code, stdout, _ = _cli("validate", str(bad), "--json")
    report = json.loads(stdout)["archives"][0]
    assert code == 1 and report["checks"][-1]["check"] == "checksums"
    assert tensor in report["errors"][0] and weights_name in report["errors"][0]


def test_legacy_pickles_in_output_hold_no_code(migrated: dict[str, Path]) -> None:
    """The kept torch pickles are what upstream wrote: plain data, no global references at all."""
    from ptycho_bridge.io.safepickle import globals_in

    members = _members(migrated["torch_N64_gs1"])
    for name in ("manifest.dill", "diffraction_to_obj/params.dill"):
        assert globals_in(members[name], name) == []


def test_lightning_with_a_known_scale_gets_torch_bundle_members(fixtures_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Real checkpoints record no intensity_scale; when one is known, the torch writer adds a bundle."""
    import numpy as np

    from converters.pytorch.read import canonical_state_dict
    from converters.pytorch.torchzip import load_torch_bytes
    from ptycho_bridge.formats import detect as reader
    from ptycho_bridge.ops import migrate

    pytest.importorskip("converters.pytorch.write")
    real = reader.read_archive

    def with_scale(path, **kwargs):
        arch = real(path, **kwargs)
        arch.intensity_scale = 988.2117919921875  # the bundle's own value (torch_N64_gs1 params.dill)
        return arch

    monkeypatch.setattr(migrate, "read_archive", with_scale)
    ckpt = fixtures_dir / "torch_N64_gs1" / "lightning.ckpt"
    plan = migrate.plan_migration(ckpt, tmp_path / "out.zip")
    assert {"manifest.dill", "diffraction_to_obj/model.pth", "diffraction_to_obj/params.dill"} <= set(plan.legacy)
    assert plan.manifest["models"]["diffraction_to_obj"]["payload"] == {
        "kind": "torch-state-dict", "member": "diffraction_to_obj/model.pth"}
    state = load_torch_bytes(plan.members["diffraction_to_obj/model.pth"], label="model.pth")
    tensors, _ = canonical_state_dict(state, member="model.pth")
    source = real(ckpt).primary
    assert set(tensors) == set(source.tensor_info)
    for name, value in tensors.items():
        assert np.array_equal(value, source.tensors[name]), name


def test_refuses_to_migrate_in_place(fixtures_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "wts.h5.zip"
    src.write_bytes((fixtures_dir / "torch_N64_gs1" / "wts.h5.zip").read_bytes())
    before = src.read_bytes()
    code, _, err = _cli("migrate", str(src), "-o", str(tmp_path), "--force")
    assert code == 1 and "is the source archive" in err
    assert src.read_bytes() == before
