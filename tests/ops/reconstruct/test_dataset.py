"""Dataset reading: every accepted layout gives the same patterns; every bad dataset names its key."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho_bridge.errors import ArchiveError, FormatError
from ptycho_bridge.ops.reconstruct.dataset import open_dataset
from ptycho_bridge.ops.sample import sample_dataset

N = 64


@pytest.fixture(scope="module")
def scan() -> dict[str, np.ndarray]:
    d = sample_dataset()
    return {k: v[:12] if k in ("diffraction", "xcoords", "ycoords") else v for k, v in d.items()
            if k not in ("xcoords_start", "ycoords_start")}


def write(path: Path, data: dict[str, np.ndarray], compressed: bool = False) -> str:
    (np.savez_compressed if compressed else np.savez)(path, **data)
    return str(path)


def write_h5(path: Path, scan: dict[str, np.ndarray]) -> h5py.File:
    """The four required keys as contiguous datasets at the root; the file is returned open for additions."""
    f = h5py.File(path, "w")
    for k in ("diffraction", "xcoords", "ycoords", "probeGuess"):
        f[k] = scan[k]
    return f


def read_all(path: str, **kw: object) -> np.ndarray:
    ds = open_dataset(path, N, **kw)  # type: ignore[arg-type]
    try:
        return ds.patterns.take(np.arange(ds.count))
    finally:
        ds.close()


@pytest.mark.parametrize("layout", ["MNN", "NNM", "MNN1", "fortran", "deflated", "diff3d"])
def test_layouts_read_the_same_patterns(tmp_path: Path, scan: dict[str, np.ndarray], layout: str) -> None:
    d = dict(scan)
    p = scan["diffraction"]
    if layout == "NNM":
        d["diffraction"] = np.ascontiguousarray(np.moveaxis(p, 0, -1))
    elif layout == "MNN1":
        d["diffraction"] = p[..., None]
    elif layout == "fortran":
        d["diffraction"] = np.asfortranarray(p)
    elif layout == "diff3d":
        d["diff3d"] = d.pop("diffraction")
    path = write(tmp_path / "s.npz", d, compressed=layout == "deflated")
    got = read_all(path)
    assert np.array_equal(got, p)
    ds = open_dataset(path, N)
    try:  # out of order, duplicates
        assert np.array_equal(ds.patterns.take(np.array([5, 1, 5, 0])), p[[5, 1, 5, 0]])
    finally:
        ds.close()


def test_hdf5_with_key_mapping_and_float32_coordinates(tmp_path: Path, scan: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["entry/data"] = scan["diffraction"]
        f["xcoords"] = scan["xcoords"].astype(np.float32)
        f["ycoords"] = scan["ycoords"].astype(np.float32)
        f["probeGuess"] = scan["probeGuess"]
    got = read_all(str(path), keys={"diffraction": "entry/data"})
    assert np.array_equal(got, scan["diffraction"])
    ds = open_dataset(str(path), N, keys={"diffraction": "entry/data"})
    assert ds.x.dtype == np.float64 and np.array_equal(ds.x, scan["xcoords"].astype(np.float32))
    ds.close()


def test_hdf5_soft_link_is_refused(tmp_path: Path, scan: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    with write_h5(path, scan) as f:
        f["alias"] = h5py.SoftLink("/xcoords")
    with pytest.raises(ArchiveError, match="soft link"):
        open_dataset(str(path), N)


def test_hdf5_unused_string_dataset_is_tolerated_chunked_data_read_in_the_child(
        tmp_path: Path, scan: dict[str, np.ndarray]) -> None:
    """A NeXus-style title string beside gzip-chunked patterns: the metadata comes from the isolated libhdf5 child
    (the pure scan does not read chunked layouts), the patterns from child reads, and the string is never read."""
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["title"] = "scan 1"
        f.create_dataset("diffraction", data=np.ascontiguousarray(np.moveaxis(scan["diffraction"], 0, -1)),
                         chunks=(64, 64, 3), compression="gzip", shuffle=True)
        for k in ("xcoords", "ycoords", "probeGuess"):
            f[k] = scan[k]
    ds = open_dataset(str(path), N)
    try:
        assert "isolated" in ds.patterns.description and "libhdf5" in " ".join(ds.notes)
        assert np.array_equal(ds.patterns.take(np.arange(12)), scan["diffraction"])
        assert np.array_equal(ds.patterns.take(np.array([9, 2, 2])), scan["diffraction"][[9, 2, 2]])
        child = ds.patterns._reader._worker._pid  # type: ignore[attr-defined]  # one reader child for every block
        assert child is not None and child != os.getpid()
    finally:
        ds.close()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # stopped and reaped by close()


@pytest.mark.parametrize("mapped", [False, True])
def test_hdf5_small_chunked_patterns_cross_from_the_child_once(tmp_path: Path, scan: dict[str, np.ndarray],
                                                                monkeypatch: pytest.MonkeyPatch, mapped: bool) -> None:
    """The describing child preloads small keys (coordinates, probe) but not the patterns, however small: they are
    read through the BlockReader child, which would otherwise be a second transfer."""
    import ptycho_bridge.ops.reconstruct.dataset as dataset_module
    from ptycho_bridge.ops.reconstruct.h5scan import describe

    key = "entry/data" if mapped else "diffraction"
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=scan["diffraction"], chunks=(4, 64, 64), compression="gzip")
        for k in ("xcoords", "ycoords", "probeGuess"):
            f[k] = scan[k]
    seen = []

    def spy(*args, **kw):  # type: ignore[no-untyped-def]
        seen.append(describe(*args, **kw))
        return seen[-1]

    monkeypatch.setattr(dataset_module, "describe", spy)
    ds = open_dataset(str(path), N, keys={"diffraction": key} if mapped else None)
    try:
        (facts,) = seen
        assert "libhdf5" in facts.source and facts.datasets["/" + key].preloaded is None
        assert all(facts.datasets[p].preloaded is not None for p in ("/xcoords", "/ycoords", "/probeGuess"))
        assert "isolated" in ds.patterns.description
        assert np.array_equal(ds.patterns.take(np.arange(12)), scan["diffraction"])
        assert np.array_equal(ds.x, scan["xcoords"])
        assert np.array_equal(ds.probe, scan["probeGuess"].astype(np.complex64))
    finally:
        ds.close()


def test_hdf5_contiguous_patterns_are_mapped_without_libhdf5(tmp_path: Path, scan: dict[str, np.ndarray]) -> None:
    path = tmp_path / "s.h5"
    write_h5(path, scan).close()
    ds = open_dataset(str(path), N)
    try:
        assert "mapped" in ds.patterns.description and "metadata scan" in " ".join(ds.notes)
        assert np.array_equal(ds.patterns.take(np.array([11, 0, 5])), scan["diffraction"][[11, 0, 5]])
        assert np.array_equal(ds.probe, scan["probeGuess"].astype(np.complex64))
    finally:
        ds.close()


BAD = {
    "missing diffraction": (lambda d: d.pop("diffraction"), "diffraction"),
    "missing xcoords": (lambda d: d.pop("xcoords"), "xcoords"),
    "missing probe": (lambda d: d.pop("probeGuess"), "probeGuess"),
    "wrong N": (lambda d: d.update(diffraction=d["diffraction"][:, :32, :32]), "diffraction"),
    "NaN coordinate": (lambda d: d["xcoords"].__setitem__(3, np.nan), "xcoords"),
    "mismatched lengths": (lambda d: d.update(ycoords=d["ycoords"][:-1]), "ycoords"),
    "zero patterns": (lambda d: d.update(diffraction=d["diffraction"][:0]), "diffraction"),
    "complex patterns": (lambda d: d.update(diffraction=d["diffraction"].astype(np.complex64)), "diffraction"),
    "pickled objects": (lambda d: d.update(xcoords=np.array([object()] * 12, dtype=object)), "xcoords"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_datasets_name_the_key(tmp_path: Path, scan: dict[str, np.ndarray], name: str) -> None:
    d = {k: v.copy() for k, v in scan.items()}
    edit, key = BAD[name]
    edit(d)
    path = tmp_path / "bad.npz"
    np.savez(path, **d)  # np.savez pickles object arrays: the reader must refuse, never unpickle
    with pytest.raises(FormatError) as info:
        open_dataset(str(path), N)
    assert info.value.field == key and info.value.member == "bad.npz"
    assert f"bad.npz [{key}]" in str(info.value)


def test_nan_pattern_is_found_by_the_first_pass(tmp_path: Path, scan: dict[str, np.ndarray]) -> None:
    from ptycho_bridge.ops.reconstruct.normalise import pattern_energies

    d = dict(scan)
    d["diffraction"] = scan["diffraction"].copy()
    d["diffraction"][7, 3, 3] = np.nan
    ds = open_dataset(write(tmp_path / "s.npz", d), N)
    try:
        with pytest.raises(FormatError, match="pattern 7 contains non-finite"):
            pattern_energies(ds.patterns, np.arange(12), chunk=5)
    finally:
        ds.close()


def test_not_a_dataset(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"hello")
    with pytest.raises(FormatError, match="neither"):
        open_dataset(str(path), N)


def test_deflated_member_read_backwards_is_spooled_once(tmp_path: Path, scan: dict[str, np.ndarray]) -> None:
    """Going backwards used to re-inflate the member from its start for every block (quadratic second pass)."""
    ds = open_dataset(write(tmp_path / "s.npz", scan, compressed=True), N)
    try:
        src = ds.patterns
        assert np.array_equal(src.take(np.arange(8, 12)), scan["diffraction"][8:12])  # forward: streamed
        assert src._mapped is None  # type: ignore[attr-defined]
        assert np.array_equal(src.take(np.arange(0, 3)), scan["diffraction"][0:3])  # a second pass: streamed again
        assert src._mapped is None  # type: ignore[attr-defined]
        for lo in (1, 0, 6):  # backwards again, three times: one spool, then maps
            assert np.array_equal(src.take(np.arange(lo, lo + 3)), scan["diffraction"][lo:lo + 3])
        assert src._mapped is not None and src._stream is None  # type: ignore[attr-defined]
        spool = src._mapped.path  # type: ignore[attr-defined]
    finally:
        ds.close()
    assert not Path(spool).exists()
