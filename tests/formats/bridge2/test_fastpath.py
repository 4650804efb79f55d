"""bridge-2 tensor offsets (the safetensors-style index) and the reader's offset fast path.

The writer records each tensor's data offset inside ``weights.h5``; the reader takes views at those
offsets without h5py; bounds hold whatever the manifest says; ``validate`` and
``read_archive(full_check=True)`` cross-check every offset against HDF5 (docs/archive-format.md §3).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho_bridge import read_archive
from ptycho_bridge.errors import ChecksumError, CorruptArchiveError, SchemaError
from ptycho_bridge.ops.migrate import migrate
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.ops.sample import write_sample
from tests._support import read_member, rewrite_zip

WEIGHTS = "diffraction_to_obj/weights.h5"


@pytest.fixture(scope="module")
def archives(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fastpath")
    paths = {"sample": write_sample(out / "sample.zip")}
    for case in ("tf_N64_gs1", "torch_N64_gs1"):
        target = out / case / "wts.h5.zip"
        target.parent.mkdir()
        migrate(fixtures_dir / case / "wts.h5.zip", target, verify=False)
        paths[case] = target
    return paths


def _manifest(path: Path) -> dict:
    return json.loads(read_member(path, "manifest.json"))


def _with_manifest(src: Path, dst: Path, manifest: dict, **kw) -> Path:  # type: ignore[no-untyped-def]
    return rewrite_zip(src, dst, replace={"manifest.json": json.dumps(manifest, indent=1).encode()}, **kw)


def _h5_tensors(path: Path, member: str) -> dict[str, tuple[int | None, np.ndarray]]:
    """(data offset, values) of every /tensors dataset, straight from h5py."""
    with h5py.File(io.BytesIO(read_member(path, member)), "r") as f:
        return {k: (d.id.get_offset(), d[()]) for k, d in f["tensors"].items()}


@pytest.mark.parametrize("case", ["sample", "tf_N64_gs1", "torch_N64_gs1"])
def test_offsets_written_and_equal_to_h5py(archives: dict[str, Path], case: str) -> None:
    manifest = _manifest(archives[case])
    seen = 0
    for entry in manifest["models"].values():
        if "tensors" not in entry:
            continue
        truth = _h5_tensors(archives[case], entry["weights"])
        assert set(truth) == set(entry["tensors"])
        for name, meta in entry["tensors"].items():
            assert meta["offset"] == truth[name][0], name
            seen += 1
    assert seen > 20


@pytest.mark.parametrize("case", ["tf_N64_gs1", "torch_N64_gs1"])
def test_fast_path_bit_identical_to_h5py_path(archives: dict[str, Path], case: str, tmp_path: Path) -> None:
    src = archives[case]
    manifest = _manifest(src)
    for entry in manifest["models"].values():
        for meta in entry.get("tensors", {}).values():
            del meta["offset"]
    no_offsets = _with_manifest(src, tmp_path / "no-offsets.zip", manifest)  # h5py fallback
    deflated = rewrite_zip(src, tmp_path / "deflated.zip", compression=zipfile.ZIP_DEFLATED)  # fallback too
    fast, slow, defl = read_archive(src), read_archive(no_offsets), read_archive(deflated)
    for name, model in fast.models.items():
        if model.sentinel:
            continue
        truth = _h5_tensors(src, model.payload["weights"])
        for tname, arr in model.tensors.items():
            for other in (slow.models[name].tensors[tname], defl.models[name].tensors[tname], truth[tname][1]):
                assert arr.dtype == other.dtype and arr.shape == other.shape, tname
                assert arr.tobytes() == np.ascontiguousarray(other).tobytes(), tname


def test_fast_path_opens_no_hdf5(archives: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    arch = read_archive(archives["tf_N64_gs1"])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("h5py.File opened on the offset fast path")

    monkeypatch.setattr(h5py, "File", refuse)
    tensors = dict(arch.primary.tensors)
    assert len(tensors) == len(arch.primary.tensor_info) > 20
    bases = {id(a.base) for a in tensors.values() if a.base is not None}
    assert len(bases) == 1  # views of one member buffer, no copies


@pytest.mark.parametrize("lie", ["end", "huge"])
def test_offset_outside_member_is_a_clean_error(archives: dict[str, Path], tmp_path: Path, lie: str) -> None:
    src = archives["sample"]
    manifest = _manifest(src)
    tensors = manifest["models"]["diffraction_to_obj"]["tensors"]
    name = next(k for k, v in tensors.items() if v["shape"] and v["shape"][0] > 1)
    size = manifest["members"][WEIGHTS]["size"]
    tensors[name]["offset"] = size - 4 if lie == "end" else 2**62
    bad = _with_manifest(src, tmp_path / "bad.zip", manifest)
    arch = read_archive(bad)  # metadata only: fine
    with pytest.raises(CorruptArchiveError) as info:
        dict(arch.primary.tensors)
    assert name in str(info.value) and WEIGHTS in str(info.value) and "outside" in str(info.value)
    report = validate_path(bad)
    assert not report["valid"] and name in " ".join(report["errors"])


def test_negative_offset_fails_the_schema(archives: dict[str, Path], tmp_path: Path) -> None:
    src = archives["sample"]
    manifest = _manifest(src)
    tensors = manifest["models"]["diffraction_to_obj"]["tensors"]
    next(iter(tensors.values()))["offset"] = -8
    with pytest.raises(SchemaError, match="offset"):
        read_archive(_with_manifest(src, tmp_path / "neg.zip", manifest))


def test_in_bounds_lying_offset_fails_validate_naming_the_tensor(archives: dict[str, Path], tmp_path: Path) -> None:
    """Point one tensor at another's (finite) bytes: loads fine, but validate and verify=True refuse it."""
    src = archives["tf_N64_gs1"]
    manifest = _manifest(src)
    tensors = manifest["models"]["diffraction_to_obj"]["tensors"]
    nbytes = {k: int(np.prod(v["shape"])) * np.dtype(v["dtype"]).itemsize for k, v in tensors.items()}
    victim = min((k for k in tensors if nbytes[k] >= 64), key=lambda k: nbytes[k])
    donor = next(k for k in tensors if k != victim and nbytes[k] >= nbytes[victim] and tensors[k]["dtype"] == "float32")
    tensors[victim]["offset"] = tensors[donor]["offset"]
    bad = _with_manifest(src, tmp_path / "lie.zip", manifest)
    loaded = dict(read_archive(bad, verify=False).primary.tensors)  # --no-verify: in bounds, taken as is
    assert loaded[victim].tobytes() != dict(read_archive(src).primary.tensors)[victim].tobytes()
    report = validate_path(bad)
    assert not report["valid"]
    assert victim in report["errors"][0] and "offset" in report["errors"][0] and WEIGHTS in report["errors"][0]
    with pytest.raises(ChecksumError, match="offset") as info:  # the default read hashes each view
        dict(read_archive(bad).primary.tensors)
    assert victim in str(info.value)
    with pytest.raises(ChecksumError, match="offset") as info:
        read_archive(bad, full_check=True)
    assert victim in str(info.value)


def test_verify_true_catches_what_the_fast_path_does_not(archives: dict[str, Path], tmp_path: Path) -> None:
    """The fast path skips CRC-32; a changed tensor byte is caught by sha256 (the default) and validate."""
    src = archives["sample"]
    dict(read_archive(src, full_check=True).primary.tensors)  # a good archive verifies
    manifest = _manifest(src)
    meta = next(iter(manifest["models"]["diffraction_to_obj"]["tensors"].items()))
    data = bytearray(read_member(src, WEIGHTS))
    data[meta[1]["offset"]] ^= 0x40
    bad = rewrite_zip(src, tmp_path / "flip.zip", replace={WEIGHTS: bytes(data)})  # CRC recomputed, sha256 stale
    dict(read_archive(bad, verify=False).primary.tensors)  # --no-verify trusts the content
    with pytest.raises(ChecksumError):
        read_archive(bad)
    assert not validate_path(bad)["valid"]


def test_a_2_0_archive_still_reads_and_validates(tmp_path: Path) -> None:
    """Cross-version regression (zarr-style): archives written as format 2.0.0 keep loading under 2.1."""
    import hashlib
    import json
    import zipfile

    from ptycho_bridge.formats.bridge2.layout import FORMAT_VERSION
    from ptycho_bridge.formats.detect import read_archive
    from ptycho_bridge.ops.report import validate_path
    from ptycho_bridge.ops.sample import write_sample

    assert FORMAT_VERSION.startswith("2.") and FORMAT_VERSION != "2.0.0"
    src = write_sample(tmp_path / "new.zip")
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(src) as zin:
        members = {info.filename: (info, zin.read(info.filename)) for info in zin.infolist()}
    params = json.loads(members["params.json"][1])
    params["format_version"] = "2.0.0"
    params_bytes = json.dumps(params).encode()
    manifest = json.loads(members["manifest.json"][1])
    manifest["format_version"] = "2.0.0"
    manifest["members"]["params.json"] = {"size": len(params_bytes), "sha256": hashlib.sha256(params_bytes).hexdigest()}
    members["params.json"] = (members["params.json"][0], params_bytes)
    members["manifest.json"] = (members["manifest.json"][0], json.dumps(manifest).encode())
    with zipfile.ZipFile(old, "w") as zout:
        for info, data in members.values():
            zout.writestr(info, data)
    arch = read_archive(old)
    assert arch.format_version == "2.0.0" and len(dict(arch.primary.tensors)) > 0
    assert validate_path(old)["valid"] is True


@pytest.mark.parametrize("verify", [True, False])
def test_the_probe_is_read_without_libhdf5_and_equals_what_libhdf5_reads(
        archives: dict[str, Path], monkeypatch: pytest.MonkeyPatch, verify: bool) -> None:
    """issue 16: the pure metadata scan locates the probe (no forked child); libhdf5 reads the same array."""
    from ptycho_bridge.formats.bridge2 import read as bridge_read

    path = archives["tf_N64_gs1"]
    with h5py.File(io.BytesIO(read_member(path, "diffraction_to_obj/weights.h5")), "r") as f:
        expected = f["params/probe"][()]
    calls: list[object] = []
    real = bridge_read.run_isolated
    monkeypatch.setattr(bridge_read, "run_isolated", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    probe = read_archive(path, verify=verify).probe
    assert calls == [] and probe is not None
    assert probe.dtype == expected.dtype == np.complex64 and np.array_equal(probe, expected)
    monkeypatch.setattr(bridge_read, "dataset_from_scan", lambda *a: None)  # the scan does not answer: libhdf5
    again = read_archive(path, verify=verify).probe
    assert [getattr(c, "__name__", c) for c in calls] == ["_read_params_array"]
    assert again is not None and np.array_equal(again, expected)


def test_validate_refuses_an_archive_whose_parsers_disagree_on_the_probe(
        archives: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A metadata scan that placed the probe elsewhere than libhdf5 does would show another probe to the fast
    path: validate compares the two (here the scan is made to lie; real files are compared in test_h5meta)."""
    from ptycho_bridge.formats.bridge2 import verify as bridge_verify
    from ptycho_bridge.io.h5meta import H5Metadata, scan

    path = archives["tf_N64_gs1"]
    assert validate_path(path)["valid"]

    def lying(image: bytes, **kw: str) -> H5Metadata | None:
        meta = scan(image, **kw)
        if meta is None or meta.storage.get("/params/probe") is None:  # the other model's weights hold no probe
            return meta
        start, nbytes = meta.storage["/params/probe"]  # type: ignore[misc]
        return H5Metadata(meta.datasets, meta.attributes, {**meta.storage, "/params/probe": (start + 8, nbytes)})

    monkeypatch.setattr(bridge_verify, "scan", lying)
    report = validate_path(path)
    assert not report["valid"] and "HDF5 parsers disagree on /params/probe" in report["errors"][0], report["errors"]
