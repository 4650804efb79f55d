"""The hostile-scan corpus (issue 23): each case writes one bad scan file and names what the refusal must say.

Built from the bundled sample scan (12 patterns, N = 64), so the suite needs no fixture. Each builder returns the
file's path; ``CASES[name] = (builder, words)``: the one ``error:`` line must name the file and contain ``words``.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from ptycho_bridge.ops.sample import sample_dataset
from tests._support import patch_central_directory

M = 12
KEYS = ("diffraction", "xcoords", "ycoords", "probeGuess")


def base() -> dict[str, np.ndarray]:
    d = sample_dataset()
    return {k: (d[k][:M] if k != "probeGuess" else d[k]).copy() for k in KEYS}


# -- .npz ---------------------------------------------------------------------------------------------------
def npz_bytes(d: dict[str, np.ndarray], compressed: bool = True) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **d)
    return buf.getvalue()


def _npz(tmp: Path, d: dict[str, np.ndarray], compressed: bool = True) -> Path:
    path = tmp / "bad.npz"
    path.write_bytes(npz_bytes(d, compressed))
    return path


def _edited(edit: Callable[[dict[str, np.ndarray]], None], compressed: bool = True) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        d = base()
        edit(d)
        return _npz(tmp, d, compressed)
    return build


def _npy_member(header: dict[str, object], payload: bytes) -> bytes:
    text = repr(header).encode("latin1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def _with_member(name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> Callable[[Path], Path]:
    """The base scan with member ``name`` replaced by raw ``data`` (a hand-made .npy)."""
    def build(tmp: Path) -> Path:
        src = zipfile.ZipFile(io.BytesIO(npz_bytes(base())))
        path = tmp / "bad.npz"
        with zipfile.ZipFile(path, "w") as out:
            for info in src.infolist():
                out.writestr(info.filename, data if info.filename == name else src.read(info), method)
        return path
    return build


def _claims_huge(tmp: Path) -> Path:
    """diffraction.npy: 1 kB of deflate whose zip entry claims 4 GB (an .npy header saying so too)."""
    path = _with_member("diffraction.npy", _npy_member({"descr": "<f4", "fortran_order": False,
                                                         "shape": (262143, 64, 64)}, b"\0" * 1024))(tmp)
    data = patch_central_directory(path.read_bytes(), "diffraction.npy", file_size=0xFFFF_FFF0)
    path.write_bytes(data)
    return path


def _huge_probe_header(tmp: Path) -> Path:
    """probeGuess.npy declares 65536 x 65536 complex128 (64 GiB) over 16 bytes of data."""
    return _with_member("probeGuess.npy", _npy_member({"descr": "<c16", "fortran_order": False,
                                                        "shape": (65536, 65536)}, b"\0" * 16))(tmp)


def _truncated_npz(tmp: Path) -> Path:
    data = npz_bytes(base())
    path = tmp / "bad.npz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_deflate(tmp: Path) -> Path:
    """The deflate stream of diffraction.npy overwritten mid-way (CRCs in the zip stay as written)."""
    data = bytearray(npz_bytes(base()))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("diffraction.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    data[mid:mid + 4096] = b"\xff" * 4096
    path = tmp / "bad.npz"
    path.write_bytes(bytes(data))
    return path


def _duplicate_key(tmp: Path) -> Path:
    src = npz_bytes(base())
    path = tmp / "bad.npz"
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(path, "w") as out:
        for info in zin.infolist():
            out.writestr(info.filename, zin.read(info))
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.writestr("xcoords.npy", zin.read("ycoords.npy"))
    return path


def _encrypted(tmp: Path) -> Path:
    path = _npz(tmp, base())
    path.write_bytes(patch_central_directory(path.read_bytes(), "xcoords.npy", flag_bits=1))
    return path


def _stored_size_lie(tmp: Path) -> Path:
    path = _npz(tmp, base(), compressed=False)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("xcoords.npy")
    path.write_bytes(patch_central_directory(path.read_bytes(), "xcoords.npy", file_size=info.file_size + 800))
    return path


def _bad_header(tmp: Path) -> Path:
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", 22) + b"{'descr': __import__}\n"
    return _with_member("xcoords.npy", raw)(tmp)


# -- HDF5 ---------------------------------------------------------------------------------------------------
def _h5(tmp: Path, d: dict[str, np.ndarray], **dataset_kw: object) -> Path:
    path = tmp / "bad.h5"
    with h5py.File(path, "w") as f:
        for k, v in d.items():
            if k == "diffraction":
                f.create_dataset(k, data=v, **dataset_kw)  # type: ignore[arg-type]
            else:
                f[k] = v
    return path


def _h5_link(kind: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        d = base()
        d.pop("diffraction")
        path = _h5(tmp, d)
        other = tmp / "other.h5"
        with h5py.File(other, "w") as f:
            f["diffraction"] = base()["diffraction"]
        with h5py.File(path, "a") as f:
            f["diffraction"] = (h5py.ExternalLink(str(other), "/diffraction") if kind == "external"
                                else h5py.SoftLink("/xcoords"))
        other.unlink()  # the refusal happens on the link itself: nothing is followed
        return path
    return build


def _h5_replacing(tmp: Path, key: str, make: Callable[[Any], None]) -> Path:
    """The base scan with dataset ``key`` created by ``make(h5py.File)`` instead of written plainly."""
    d = base()
    d.pop(key)
    path = _h5(tmp, d)
    with h5py.File(path, "a") as f:
        make(f)
    return path


def _h5_virtual(tmp: Path) -> Path:
    layout = h5py.VirtualLayout(shape=(M, 64, 64), dtype="f4")
    layout[:] = h5py.VirtualSource("/etc/passwd", "/diffraction", shape=(M, 64, 64))
    return _h5_replacing(tmp, "diffraction", lambda f: f.create_virtual_dataset("diffraction", layout))


def _h5_external_storage(tmp: Path) -> Path:
    return _h5_replacing(tmp, "diffraction", lambda f: f.create_dataset(
        "diffraction", shape=(M, 64, 64), dtype="f4", external=[("/etc/passwd", 0, h5py.h5f.UNLIMITED)]))


def _h5_unknown_filter(tmp: Path) -> Path:
    """diffraction chunked through filter 32001 (blosc), marked optional so h5py writes it without the plugin."""
    return _h5(tmp, base(), chunks=(4, 64, 64), compression=32001, allow_unknown_filter=True)


def _h5_unwritten_huge(tmp: Path) -> Path:
    """A tiny file declaring 10^6 chunked patterns (16 GB) of which none was written: libhdf5 would fill them in."""
    return _h5_replacing(tmp, "diffraction", lambda f: f.create_dataset(
        "diffraction", shape=(1_000_000, 64, 64), dtype="f4", chunks=(1, 64, 64)))


def _h5_huge_coords(tmp: Path) -> Path:
    """xcoords declares 2^31 float64 values (16 GiB), never written."""
    return _h5_replacing(tmp, "xcoords", lambda f: f.create_dataset(
        "xcoords", shape=(1 << 31,), dtype="f8", chunks=(1 << 16,)))


def _h5_truncated(tmp: Path) -> Path:
    path = _h5(tmp, base())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _h5_truncated_chunks(tmp: Path) -> Path:
    """A gzip-chunked diffraction whose chunk bytes are overwritten: libhdf5 fails inflating them."""
    path = _h5(tmp, base(), chunks=(2, 64, 64), compression="gzip")
    with h5py.File(path, "r") as f:
        dset = f["diffraction"]
        offsets = [dset.id.get_chunk_info(i).byte_offset for i in range(dset.id.get_num_chunks())]
    data = bytearray(path.read_bytes())
    for off in offsets[2:]:
        data[off:off + 64] = b"\0" * 64
    path.write_bytes(bytes(data))
    return path


def _h5_btree_self_loop(tmp: Path) -> Path:
    """A chunked diffraction whose chunk B-tree root is made an internal node whose every child is itself:
    libhdf5 recurses until the stack is gone (SIGSEGV) reading it."""
    path = _h5(tmp, base(), chunks=(2, 64, 64))
    image = bytearray(path.read_bytes())
    pos = image.find(b"TREE")
    while pos != -1 and image[pos + 4] != 1:  # node type 1: raw data chunks
        pos = image.find(b"TREE", pos + 4)
    assert pos != -1
    used = struct.unpack_from("<H", image, pos + 6)[0]
    key = 4 + 4 + (3 + 1) * 8
    image[pos + 5] = 1
    for i in range(used):
        struct.pack_into("<Q", image, pos + 24 + key + i * (key + 8), pos)
    path.write_bytes(bytes(image))
    return path


def _h5_edit(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        d = base()
        edit(d)
        return _h5(tmp, d)
    return build


def _h5_compound(tmp: Path) -> Path:
    d = base()
    rec = np.zeros(M, dtype=[("x", "f8"), ("y", "f8")])
    d["xcoords"] = rec  # type: ignore[assignment]
    return _h5(tmp, d)


def _h5_string_key(tmp: Path) -> Path:
    """A NeXus-style title string beside the scan (tolerated), and a string mapped... as xcoords (refused)."""
    d = base()
    d.pop("xcoords")
    path = _h5(tmp, d)
    with h5py.File(path, "a") as f:
        f["title"] = "scan 1"
        f.create_dataset("xcoords", data=np.array([b"1.0"] * M))
    return path


def _nan(key: str, where: tuple[int, ...]) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(d: dict[str, np.ndarray]) -> None:
        d[key] = d[key].copy()
        d[key][where] = np.nan
    return edit


def _set(key: str, value: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(d: dict[str, np.ndarray]) -> None:
        d[key] = value(d)
    return edit


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    # .npz
    "npz: 1 kB member claiming 4 GB": (_claims_huge, "1100:1"),
    "npz: probe header declares 64 GiB": (_huge_probe_header, "header declares"),
    "npz: object dtype (pickle)": (_edited(_set("diffraction", lambda d: np.array([None] * M, dtype=object))),
                                   "object dtype"),
    "npz: structured dtype": (_edited(_set("xcoords", lambda d: np.zeros(M, dtype=[("a", "f8"), ("b", "i4")]))),
                              "structured dtype"),
    "npz: truncated file": (_truncated_npz, "unreadable .npz"),
    "npz: corrupt deflate stream in patterns": (_corrupt_deflate, "diffraction"),
    "npz: NaN coordinates": (_edited(_nan("xcoords", (3,))), "1 non-finite value (NaN/Inf; first at index 3)"),
    "npz: Inf in probe": (_edited(_set("probeGuess", lambda d: np.where(np.arange(64)[:, None] == 5, np.inf,
                                                                         d["probeGuess"]))),
                          "64 non-finite values (NaN/Inf; first at position (5, 0))"),
    "npz: NaN in a pattern": (_edited(_nan("diffraction", (7, 3, 9))), "pattern 7 contains non-finite values (1 in it, "
                                                                       "first at pixel (3, 9)"),
    "npz: mismatched lengths": (_edited(_set("ycoords", lambda d: d["ycoords"][:-1])), "expected shape (12,)"),
    "npz: probe of the wrong N": (_edited(_set("probeGuess", lambda d: d["probeGuess"][:32, :32])), "(64,64)"),
    "npz: duplicate key": (_duplicate_key, "duplicate zip member"),
    "npz: encrypted member": (_encrypted, "encrypted"),
    "npz: stored size lie": (_stored_size_lie, "xcoords"),
    "npz: npy header with code": (_bad_header, "unreadable .npy header"),
    # HDF5
    "h5: external link": (_h5_link("external"), "external link"),
    "h5: soft link": (_h5_link("soft"), "soft link"),
    "h5: virtual dataset onto /etc/passwd": (_h5_virtual, "virtual dataset"),
    "h5: external raw storage in /etc/passwd": (_h5_external_storage, "external storage"),
    "h5: filter outside the allow-list": (_h5_unknown_filter, "filter 32001 (blosc)"),
    "h5: huge declared, never written": (_h5_unwritten_huge, "unwritten or missing data"),
    "h5: huge declared coordinates": (_h5_huge_coords, "unwritten or missing data"),
    "h5: truncated file": (_h5_truncated, "not a readable HDF5 file"),
    "h5: corrupt chunks": (_h5_truncated_chunks, "cannot read"),
    "h5: crashing libhdf5 (chunk B-tree loop)": (_h5_btree_self_loop, "libhdf5 crashed (SIGSEGV)"),
    "h5: NaN coordinates": (_h5_edit(_nan("ycoords", (0,))), "first at index 0"),
    "h5: mismatched lengths": (_h5_edit(_set("xcoords", lambda d: d["xcoords"][:5])), "expected shape (12,)"),
    "h5: compound coordinates": (_h5_compound, "xcoords"),
    "h5: string coordinates": (_h5_string_key, "non-numeric dtype"),
}
