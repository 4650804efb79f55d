"""The pure-Python HDF5 metadata scan (ptycho_bridge/io/h5meta.py) against h5py, on real and crafted files.

The contract: ``scan`` returns exactly what h5py reports (datasets in walk order with shape and ``str(dtype)``,
every attribute value, or UNSUPPORTED where it does not decode one) or None -- never a different answer, never an
exception, and fast on any input.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptycho_bridge.io.h5_isolated import run_isolated
from ptycho_bridge.io.h5meta import UNSUPPORTED, scan
from tests._support import FIXTURES_DIR, SAVEDMODEL_DIR, TF_CASES

h5py = pytest.importorskip("h5py")


def h5py_view(data: bytes) -> dict[str, Any]:
    """What h5py reports, walked like io.h5.walk_datasets; run in the isolated child (mutated files may crash it).

    Attribute values as plain data; one h5py cannot read (a broken heap reference) is "<error>", anything but a
    number or a string is its type name."""
    def value(v: Any) -> Any:
        if isinstance(v, np.generic) and v.dtype.kind in "iuf":
            return v.item()
        return v if isinstance(v, str) else f"<{type(v).__name__}>"

    def attrs(obj: Any) -> dict[str, Any]:
        out = {}
        for k in obj.attrs:
            try:
                out[k] = value(obj.attrs[k])
            except OSError:
                out[k] = "<error>"
        return out

    with h5py.File(io.BytesIO(data), "r") as f:
        datasets: list[Any] = []
        offsets: dict[str, int | None] = {}
        attributes = {"/": attrs(f)}
        stack = [f]
        while stack:
            group = stack.pop()
            for name in group:
                obj = group[name]
                attributes[obj.name] = attrs(obj)
                if isinstance(obj, h5py.Group):
                    stack.append(obj)
                else:
                    datasets.append([obj.name, [int(d) for d in obj.shape], str(obj.dtype)])
                    offset = obj.id.get_offset()  # contiguous data's file offset; None for compact or unwritten
                    offsets[obj.name] = None if offset is None else int(offset)
    return {"datasets": datasets, "attributes": attributes, "offsets": offsets}


def assert_agrees(data: bytes, meta: Any, view: dict[str, Any] | None = None) -> None:
    view = view if view is not None else run_isolated(h5py_view, data, member="test.h5", timeout=30)
    assert [[p, list(s), d] for p, (s, d) in meta.datasets.items()] == view["datasets"]
    for path, offset in view["offsets"].items():  # where contiguous raw data starts: exactly libhdf5's answer
        where = meta.storage[path]
        assert (None if where is None else where[0]) == offset, (path, where, offset)
    assert set(meta.attributes) == set(view["attributes"])
    for path, theirs in view["attributes"].items():
        mine = meta.attributes[path]
        assert set(mine) == set(theirs), path
        for name, value in theirs.items():  # UNSUPPORTED: not answered (the caller falls back if it needs it)
            assert mine[name] is UNSUPPORTED or mine[name] == value, (path, name, mine[name], value)


def fixture_members() -> list[tuple[str, bytes]]:
    out = []
    archives = [FIXTURES_DIR / c / "wts.h5.zip" for c in TF_CASES] + sorted(SAVEDMODEL_DIR.glob("*/wts.h5.zip"))
    for path in archives:
        if not path.is_file():
            continue
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith("model.h5"):
                    out.append((f"{path.parent.name}/{name}", z.read(name)))
                elif name.endswith("model.keras"):
                    with zipfile.ZipFile(io.BytesIO(z.read(name))) as keras:
                        out.append((f"{path.parent.name}/{name}/model.weights.h5", keras.read("model.weights.h5")))
    return out


MEMBERS = fixture_members() if FIXTURES_DIR.is_dir() else []
needs_fixtures = pytest.mark.skipif(not MEMBERS, reason=f"fixtures not found at {FIXTURES_DIR}")


@needs_fixtures
@pytest.mark.parametrize("label", [label for label, _ in MEMBERS])
def test_every_fixture_member_reads_exactly_as_h5py(label: str) -> None:
    data = dict(MEMBERS)[label]
    meta = scan(data)
    assert meta is not None, label
    assert_agrees(data, meta)
    if label.endswith("model.h5"):
        assert meta.datasets == {} and isinstance(meta.attributes["/"]["intensity_scale"], float)
    else:  # upstream-formats.md §4: datasets are float32 (int64: the optimizer's iteration count)
        assert {d for _, d in meta.datasets.values()} <= {"float32", "int64"}
    if label == "tf_N64_gs1/diffraction_to_obj/model.keras/model.weights.h5":  # §4's table: the vars group names its layer
        assert len(meta.datasets) == 44 and meta.datasets["/layers/conv2d_20/vars/0"] == ((3, 3, 28, 1), "float32")
        assert meta.attributes["/layers/conv2d_11/vars"]["name"] == "conv2d_18"


def test_our_writers_output_reads_exactly_as_h5py() -> None:
    from converters.tensorflow.keras_config import keras_config
    from converters.tensorflow.write import model_h5_bytes, model_weights_h5
    from tests.converters.tensorflow.cases import VARIANTS, random_tensors, variant_spec

    for kw in (VARIANTS["swish"], VARIANTS["N128_gs2"]):
        spec = variant_spec(kw)
        data = model_weights_h5(spec, random_tensors(spec), keras_config(spec))
        meta = scan(data)
        assert meta is not None and meta.datasets
        assert_agrees(data, meta)
    data = model_h5_bytes(988.25)
    meta = scan(data)
    assert meta is not None and meta.attributes["/"] == {"intensity_scale": 988.25}


def _write(tmp_path: Path, build: Any, **kw: Any) -> bytes:
    path = tmp_path / "t.h5"
    with h5py.File(path, "w", **kw) as f:
        build(f)
    return path.read_bytes()


def _varied(f: Any) -> None:
    for i, dt in enumerate(("<i1", "<u1", "<i2", ">u2", "<i4", ">i4", "<u8", "<i8", "<f2", ">f4", "<f4", "<f8", ">f8")):
        f.create_dataset(f"g{i % 3}/d{i}", data=np.arange(6, dtype=dt).reshape(2, 3))
    f["scalar"] = np.float64(2.5)
    f.create_dataset("empty", shape=(4, 0), dtype="f4")
    f.create_dataset("unwritten", shape=(1000, 1000), dtype="f4")
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    compact = h5py.h5d.create(f.id, b"compact", h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((3,)), dcpl=dcpl)
    compact.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ones(3, "f4"))
    many = f.create_group("many")  # more members than one symbol node / one B-tree node holds
    for i in range(300):
        many.create_group(f"m{i:03d}").attrs["name"] = f"layer_{i}"
    f["g0"].attrs.update({"i": np.int32(-3), "u": np.uint16(7), "f": np.float32(0.5), "s": "ünïcode", "a": [1, 2]})
    f.attrs["intensity_scale"] = 988.211669921875


@pytest.mark.parametrize("libver", [None, "earliest", "latest"])
def test_h5py_written_files_parse_correctly_or_not_at_all(tmp_path: Path, libver: str | None) -> None:
    data = _write(tmp_path, _varied, **({"libver": libver} if libver else {}))
    meta = scan(data)
    if libver == "latest":  # superblock v3, OHDR headers: outside the subset
        assert meta is None
        return
    assert meta is not None
    assert_agrees(data, meta)
    assert meta.datasets["/g0/d3"] == ((2, 3), ">u2") and meta.datasets["/scalar"] == ((), "float64")
    assert meta.attributes["/g0"]["a"] is UNSUPPORTED and meta.attributes["/g0"]["s"] == "ünïcode"


@pytest.mark.parametrize("kind", ["soft", "external", "hard_alias", "chunked", "compound", "string", "track_order",
                                  "bool", "complex_named_otherwise", "complex_mixed_parts"])
def test_what_the_subset_leaves_out_is_not_answered(tmp_path: Path, kind: str) -> None:
    def build(f: Any) -> None:
        f.create_dataset("a/x", data=np.zeros(3, "f4"))
        if kind == "soft":
            f["s"] = h5py.SoftLink("/a/x")
        elif kind == "external":
            f["e"] = h5py.ExternalLink("/etc/passwd", "/x")
        elif kind == "hard_alias":
            f["b"] = f["a"]
        elif kind == "chunked":
            f.create_dataset("c", data=np.zeros(100, "f4"), chunks=(10,), compression="gzip")
        elif kind == "compound":
            f["c"] = np.zeros(2, [("a", "f4"), ("b", "i4")])
        elif kind == "string":
            f["c"] = np.array([b"abc"])
        elif kind == "track_order":
            f.create_group("t", track_order=True).create_dataset("y", data=np.zeros(2))
        elif kind == "bool":
            f["c"] = np.ones(2, bool)
        elif kind == "complex_named_otherwise":  # h5py reads only {r, i} as complex
            f["c"] = np.zeros(2, [("re", "f4"), ("im", "f4")])
        elif kind == "complex_mixed_parts":
            f["c"] = np.zeros(2, [("r", "f4"), ("i", "f8")])

    assert scan(_write(tmp_path, build)) is None


@pytest.mark.parametrize("libver", ["earliest", None])
def test_complex_datasets_read_as_h5py_and_their_bytes_are_where_the_scan_says(tmp_path: Path, libver: str | None) -> None:
    """h5py stores complex numbers as a compound {r, i}; bridge-2's probe is one (complex64)."""
    arrays = {"p/probe": (np.arange(12) * (1 + 2j)).astype("c8").reshape(3, 4), "p/c16": np.arange(3) * 1j,
              "p/big": np.arange(4, dtype=">c8"), "p/scalar": np.complex64(3 - 1j), "p/empty": np.zeros((0, 2), "c8")}

    def build(f: Any) -> None:
        for name, arr in arrays.items():
            f[name] = arr
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        f.create_dataset("p/compact", data=np.arange(3, dtype="c8"), dcpl=dcpl)
        f.create_dataset("p/unwritten", shape=(5,), dtype="c8")

    data = _write(tmp_path, build, **({} if libver is None else {"libver": libver}))
    meta = scan(data)
    assert meta is not None
    assert_agrees(data, meta)
    assert scan(memoryview(data)) == meta  # a member buffer read in place scans the same
    assert meta.datasets["/p/probe"] == ((3, 4), "complex64") and meta.datasets["/p/big"] == ((4,), ">c8")
    assert meta.storage["/p/compact"] is None and meta.storage["/p/unwritten"] is None  # as libhdf5's get_offset
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        where = meta.storage[f"/{name}"]
        if arr.size == 0:
            continue
        assert where is not None and where[1] == arr.nbytes, name
        got = np.frombuffer(data, dtype=arr.dtype, count=arr.size, offset=where[0]).reshape(arr.shape)
        assert np.array_equal(got, arr), name


def test_a_scan_within_one_group_reports_that_group_as_the_full_scan_does(tmp_path: Path) -> None:
    def build(f: Any) -> None:
        _varied(f)
        f["p/probe"] = np.ones((2, 2), "c8")

    data = _write(tmp_path, build)
    full, part = scan(data), scan(data, within="/p")
    assert full is not None and part is not None
    assert part.datasets == {k: v for k, v in full.datasets.items() if k.startswith("/p/")} == {
        "/p/probe": ((2, 2), "complex64")}
    assert part.storage == {"/p/probe": full.storage["/p/probe"]}
    assert set(part.attributes) == {"/", "/p", "/p/probe"}
    assert scan(data, within="/absent") is not None and scan(data, within="/absent").datasets == {}  # type: ignore[union-attr]


def _root_header(data: bytes) -> int:
    return struct.unpack_from("<Q", data, 24 + 32 + 8)[0]  # superblock v0: root symbol table entry's header address


def test_a_group_that_contains_itself_is_not_answered(tmp_path: Path) -> None:
    data = bytearray(_write(tmp_path, lambda f: f.create_group("a")))
    nodes = [i for i in range(len(data)) if data[i:i + 4] == b"SNOD" and struct.unpack_from("<H", data, i + 6)[0] == 1]
    assert len(nodes) == 1  # the root's symbol node, holding "a"
    struct.pack_into("<Q", data, nodes[0] + 8 + 8, _root_header(bytes(data)))  # "a" is now the root group
    start = time.perf_counter()
    assert scan(bytes(data)) is None
    assert time.perf_counter() - start < 0.2


def test_a_huge_dimension_count_is_not_answered(tmp_path: Path) -> None:
    data = bytearray(_write(tmp_path, lambda f: f.create_dataset("x", shape=(0x0A0B0C0D,), dtype="f4")))
    pos = bytes(data).find(struct.pack("<Q", 0x0A0B0C0D)) - 8  # the dataspace message body (version 1)
    assert data[pos] == 1 and data[pos + 1] == 1
    assert scan(bytes(data)) is not None
    for rank in (9, 32, 200, 255):
        data[pos + 1] = rank
        assert scan(bytes(data)) is None


def test_anything_but_bytes_or_an_hdf5_image_is_not_answered() -> None:
    for image in (b"", b"\x89HDF\r\n\x1a\n", b"\x89HDF\r\n\x1a\n" + b"\0" * 200, b"GCOL" * 100, bytearray(b"x")):
        assert scan(image) is None  # type: ignore[arg-type]


@needs_fixtures
def test_truncated_files_are_not_answered() -> None:
    data = dict(MEMBERS)[next(label for label, _ in MEMBERS if label.endswith("diffraction_to_obj/model.keras/model.weights.h5"))]
    rng = random.Random(5)
    for cut in sorted({0, 8, 56, 96, 1000, 2047, 4096, len(data) - 1} | {rng.randrange(len(data)) for _ in range(40)}):
        assert scan(data[:cut]) is None, cut


@needs_fixtures
def test_mutated_weights_read_as_h5py_does_or_not_at_all() -> None:
    """300 seeded mutations of the metadata bytes of a real model.weights.h5 (the tensor data is skipped: flips
    there change no metadata): each scan is None or agrees with h5py, raises nothing and takes < 0.2 s."""
    label = next(label for label, _ in MEMBERS if label.startswith("tf_N64_gs1/diffraction_to_obj/model.keras"))
    data = dict(MEMBERS)[label]
    raw = np.zeros(len(data), bool)
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visititems(lambda _, o: raw.__setitem__(slice(o.id.get_offset(), o.id.get_offset() + o.id.get_storage_size()),
                                                  True) if isinstance(o, h5py.Dataset) else None)
    meta_bytes = np.flatnonzero(~raw)
    rng = random.Random(2026)
    answered = 0
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 4))):
            pos = int(meta_bytes[rng.randrange(len(meta_bytes))])
            mutated[pos] = rng.randrange(256) if rng.random() < 0.5 else mutated[pos] ^ (1 << rng.randrange(8))
        start = time.perf_counter()
        meta = scan(bytes(mutated))
        assert time.perf_counter() - start < 0.2
        if meta is not None:
            answered += 1
            assert_agrees(bytes(mutated), meta)
    assert 50 < answered < 300  # most flips land in names and reserved bytes; some must be refused
