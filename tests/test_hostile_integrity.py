"""Issue 12, findings 1, 2 and 7: one truth for tensor bytes, libhdf5 isolated, no output on failure.

Each test builds its hostile input in code from the fixtures (or the bundled sample) and failed on the
main branch before the fix: a flipped tensor byte was consumed by every command but ``validate``;
big-endian tensors passed ``validate`` while the offset fast path read different values; two crafted
HDF5 files killed the process inside libhdf5 (SIGSEGV, stack exhaustion); ``migrate`` left an output
behind that failed its own post-write validation. Crashes run in a subprocess with a timeout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.errors import ChecksumError, CorruptArchiveError, FormatError
from ptycho_bridge.formats.bridge2.write import tensor_offsets
from ptycho_bridge.io.h5_isolated import run_isolated
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.ops.sample import write_sample
from tests._support import FIXTURES_DIR, REPO, read_member, rewrite_zip

WEIGHTS = "diffraction_to_obj/weights.h5"
KERAS = "diffraction_to_obj/model.keras"


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _one_error_line(err: str, *names: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for name in names:
        assert name in err, err


def _subprocess_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ptycho_bridge", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return write_sample(tmp_path / "sample.zip")


def _reseal(src: Path, dst: Path, members: dict[str, bytes], manifest: dict) -> Path:
    """Replace members and record their fresh size + sha256 in the manifest (only the defect remains)."""
    for name, data in members.items():
        manifest["members"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return rewrite_zip(src, dst, replace={**members, "manifest.json": json.dumps(manifest).encode()})


def _rebuild_weights(image: bytes, *, tensor_dtype=None, chunked_params: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    """The same datasets written again: tensors in ``tensor_dtype`` (same values), probe chunked."""
    out = io.BytesIO()
    with h5py.File(io.BytesIO(image), "r") as src, h5py.File(out, "w", libver="earliest") as dst:
        for group in ("tensors", "params"):
            if group not in src:
                continue
            g = dst.create_group(group)
            for name, dset in src[group].items():
                arr = dset[()]
                if group == "tensors" and tensor_dtype is not None:
                    g.create_dataset(name, data=arr.astype(arr.dtype.newbyteorder(tensor_dtype)))
                elif group == "params" and chunked_params:
                    g.create_dataset(name, data=arr, chunks=tuple(max(1, min(8, d)) for d in arr.shape))
                else:
                    g.create_dataset(name, data=arr)
    return out.getvalue()


# -- finding 1: the bytes a command consumes are the bytes whose sha256 was checked ------------------
def test_flipped_tensor_byte_is_refused_by_every_consumer(sample: Path, tmp_path: Path) -> None:
    manifest = json.loads(read_member(sample, "manifest.json"))
    tname, meta = max(manifest["models"]["diffraction_to_obj"]["tensors"].items(), key=lambda kv: kv[1]["offset"])
    data = bytearray(read_member(sample, WEIGHTS))
    data[meta["offset"] + 1] ^= 0x01
    bad = rewrite_zip(sample, tmp_path / "flip.zip", replace={WEIGHTS: bytes(data)})  # CRC fresh, sha256 stale

    with pytest.raises(ChecksumError, match=WEIGHTS):
        dict(read_archive(bad).primary.tensors)
    out = tmp_path / "out"
    for args in (["export-onnx", str(bad), "-o", str(out / "m.onnx")],
                 ["convert", str(bad), "--to", "pytorch", "-o", str(out)],
                 ["diff", str(bad), str(sample)]):
        code, _, err = _cli(*args)
        assert code == 1, (args, err)
        _one_error_line(err, "sha256", WEIGHTS)
    assert not out.exists()  # convert sealed nothing over the corrupted bytes
    code, _, err = _cli("export-onnx", str(bad), "-o", str(out / "m.onnx"), "--no-verify")
    assert code == 0, err  # for people who know


def test_flip_in_a_tensor_view_is_caught_by_the_per_view_hash(sample: Path, tmp_path: Path) -> None:
    """Member sha256 resealed, tensor sha256 stale: the per-tensor hash of the view refuses it."""
    manifest = json.loads(read_member(sample, "manifest.json"))
    tname, meta = next(iter(manifest["models"]["diffraction_to_obj"]["tensors"].items()))
    data = bytearray(read_member(sample, WEIGHTS))
    data[meta["offset"]] ^= 0x01
    bad = _reseal(sample, tmp_path / "flip.zip", {WEIGHTS: bytes(data)}, manifest)
    with pytest.raises(ChecksumError, match=tname):
        dict(read_archive(bad).primary.tensors)


def test_big_endian_tensors_fail_validate_as_they_fail_the_fast_path(sample: Path, tmp_path: Path) -> None:
    """Same values stored big-endian, offsets pointing at them: main's validate passed this while the
    offset fast path read the raw bytes as little-endian (diff: 1e38-sized differences)."""
    manifest = json.loads(read_member(sample, "manifest.json"))
    image = _rebuild_weights(read_member(sample, WEIGHTS), tensor_dtype=">")
    for name, offset in tensor_offsets(image).items():
        manifest["models"]["diffraction_to_obj"]["tensors"][name]["offset"] = offset
    bad = _reseal(sample, tmp_path / "be.zip", {WEIGHTS: image}, manifest)

    assert not validate_path(bad)["valid"]
    with pytest.raises(FormatError, match="big-endian"):
        read_archive(bad, verify=False, full_check=True)  # validate's checksum pass refuses the layout
    with pytest.raises(ChecksumError):
        dict(read_archive(bad).primary.tensors)
    code, out, err = _cli("diff", str(bad), str(sample))
    assert code == 1 and not out
    _one_error_line(err, "sha256")


# -- finding 2: libhdf5 crashes and loops become one error line -------------------------------------
def _vlen_crash_keras(tmp_path: Path) -> Path:
    """tf_N64_gs1 with the VLEN type field (string -> 2, undefined) of every layer ``name`` attribute of
    ``model.weights.h5`` changed: libhdf5 dereferences garbage reading it (SIGSEGV on main)."""
    src = FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip"
    if not src.is_file():
        pytest.skip(f"upstream fixtures not found at {FIXTURES_DIR}")
    keras = read_member(src, KERAS)
    weights = bytearray(read_member_bytes(keras, "model.weights.h5"))
    marker = b"name\x00\x00\x00\x00\x19\x01"  # attribute name padded to 8, then VLEN (class 9) v1, type string
    pos, hits = weights.find(marker), 0
    while pos != -1:
        weights[pos + 9] = 0x02
        hits, pos = hits + 1, weights.find(marker, pos + 1)
    assert hits >= 10
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(keras)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, bytes(weights) if info.filename == "model.weights.h5" else zin.read(info))
    return rewrite_zip(src, tmp_path / "vlen.zip", replace={KERAS: out.getvalue()})


def read_member_bytes(zipped: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        return zf.read(name)


def _self_referencing_btree(sample: Path, tmp_path: Path) -> Path:
    """The sample with ``/params/probe`` chunked and its chunk B-tree root made an internal node (level 1)
    whose only child is itself: libhdf5 recursed until the stack was gone (SIGSEGV on main)."""
    manifest = json.loads(read_member(sample, "manifest.json"))
    original = read_member(sample, WEIGHTS)
    with h5py.File(io.BytesIO(original), "r") as f:
        ndims = len(f["params"]["probe"].shape)
    image = bytearray(_rebuild_weights(original, chunked_params=True))
    pos = image.find(b"TREE")
    while pos != -1 and image[pos + 4] != 1:  # node type 1: raw data chunks (type 0 are group nodes)
        pos = image.find(b"TREE", pos + 4)
    assert pos != -1
    used = struct.unpack_from("<H", image, pos + 6)[0]
    key = 4 + 4 + (ndims + 1) * 8
    image[pos + 5] = 1  # level 1: children are B-tree nodes
    for i in range(used):
        struct.pack_into("<Q", image, pos + 24 + key + i * (key + 8), pos)  # every child: this node
    for name, offset in tensor_offsets(bytes(image)).items():
        manifest["models"]["diffraction_to_obj"]["tensors"][name]["offset"] = offset
    return _reseal(sample, tmp_path / "btree.zip", {WEIGHTS: bytes(image)}, manifest)


@pytest.mark.parametrize("build, member", [
    (lambda sample, tmp: _vlen_crash_keras(tmp), "model.weights.h5"),
    (_self_referencing_btree, WEIGHTS),
], ids=["keras-vlen-type-sigsegv", "chunk-btree-points-at-itself"])
def test_libhdf5_crash_is_one_error_line(build, member: str, sample: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = build(sample, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["inspect", str(path)], ["validate", str(path)], ["migrate", str(path), "-o", str(tmp_path / "m")],
                 ["export-onnx", str(path), "-o", str(tmp_path / "m.onnx")]):
        if args[0] == "inspect" and member == WEIGHTS:
            # bridge-2: inspect reports from manifest.json and params.json, never opening weights.h5 (issue 16)
            proc = _subprocess_cli(*args)
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            continue
        proc = _subprocess_cli(*args)
        assert proc.returncode == 1, (args, proc.returncode, proc.stderr[-2000:])
        _one_error_line(proc.stderr, member)
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _spin() -> None:
    while True:
        pass


def _arrays() -> dict:
    return {"a": np.arange(6, dtype=">f4").reshape(2, 3), "n": [1, 2.5, "x", None], "b": np.zeros(0, np.bool_)}


def _raise_format() -> None:
    raise FormatError("bad field", member="m.h5", field="f")


def test_run_isolated_round_trip_crash_timeout_and_errors() -> None:
    got = run_isolated(_arrays, member="w.h5")
    assert got["n"] == [1, 2.5, "x", None] and got["b"].shape == (0,)
    np.testing.assert_array_equal(got["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert got["a"].flags.writeable
    with pytest.raises(CorruptArchiveError, match=r"w\.h5.*SIGSEGV"):
        run_isolated(_segfault, member="w.h5")
    with pytest.raises(CorruptArchiveError, match=r"w\.h5.*within 0\.5 s"):
        run_isolated(_spin, member="w.h5", timeout=0.5)
    with pytest.raises(FormatError, match=r"m\.h5 \[f\]: bad field"):
        run_isolated(_raise_format, member="w.h5")


# -- finding 7: no output on failure ----------------------------------------------------------------
def test_migrate_leaves_nothing_when_its_output_fails_validation(tmp_path: Path) -> None:
    """A 4,096-member source (validate accepts it) becomes a 4,100-member output, over the member
    limit: main wrote it, then failed its own check and left it on disk."""
    src = FIXTURES_DIR / "torch_N64_gs1" / "wts.h5.zip"
    if not src.is_file():
        pytest.skip(f"upstream fixtures not found at {FIXTURES_DIR}")
    with zipfile.ZipFile(src) as zf:
        count = len(zf.infolist())
    padded = rewrite_zip(src, tmp_path / "padded.zip", add=[(f"extra/{i:04d}.txt", b"x") for i in range(4096 - count)])
    assert validate_path(padded)["valid"], validate_path(padded)["errors"]
    out = tmp_path / "out"
    code, _, err = _cli("migrate", str(padded), "-o", str(out))
    assert code == 1, err
    _one_error_line(err, "limit")
    assert not out.exists() or not any(out.iterdir())
