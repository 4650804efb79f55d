"""Tensor read bandwidth: every canonical tensor of an archive vs a plain ``read()`` of the same file.

For each archive, in this process, page cache warm (one unrecorded warm-up call each):

* ``plain read``: the faster of ``open(path, "rb").read()`` and ``readinto`` of a preallocated
  buffer, whole file — the physical limit (a page-cache memcpy).
* ``read+tensors``: ``read_archive(path)`` then every canonical tensor of every model
  (``dict(model.tensors)``) — what a converter or engine pays. Bandwidth = tensor bytes / time.
  Verifying (the default): the weights member and every tensor view are sha256-hashed, so SHA-256's
  throughput bounds it; the ``unverified`` row (bridge-2) is ``read_archive(path, verify=False)``.
* ``read only``: ``read_archive(path)`` alone (manifest, schema, params; bridge-2 also reads the
  primary ``weights.h5`` once here because the probe lives in it).

For bridge-2 two ablation rows split the in-place cost: reading the members' bytes alone
(``np.fromfile`` at their offset) and computing their CRC-32 alone. The row ``previous loader`` times the loader this project used before the in-place
path (``SafeZip.read`` of the member, then h5py over ``BytesIO``), on the same archive.

Goal: bridge-2 ``read+tensors`` >= 50% of ``plain read`` bandwidth.

Run: ``.venv/bin/python benchmarks/tensor_read.py [--repeat 15] [--json]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MB, emit, fixture, migrate_fixture, synthetic_large, time_call


def load() -> str:
    """The machine's load average: the box may be shared, and noisy runs should be visible."""
    import os

    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def load_all(path: Path, verify: bool = True) -> int:
    from ptycho_bridge import read_archive

    arch = read_archive(path, verify=verify)
    return sum(a.nbytes for m in arch.models.values() for a in dict(m.tensors).values())


_BUFFERS: dict[Path, bytearray] = {}


def readinto(path: Path) -> int:
    if path not in _BUFFERS:
        _BUFFERS[path] = bytearray(path.stat().st_size)
    buf = _BUFFERS[path]
    with open(path, "rb", buffering=0) as fh:
        return fh.readinto(buf)


def member_bytes_only(path: Path) -> int:
    """Ablation: the in-place read of every weights.h5 member without its CRC-32 (no HDF5, no views)."""
    import numpy as np

    from ptycho_bridge.io.safezip import SafeZip

    total = 0
    with SafeZip(path) as zf:
        for name in zf.names():
            if name.endswith("weights.h5"):
                offset, size = zf.data_offset(name), zf.info(name).size
                total += np.fromfile(path, dtype=np.uint8, count=size, offset=offset).nbytes
    return total


def member_crc_only(path: Path) -> int:
    """Ablation: CRC-32 of every weights.h5 member's bytes, already in memory (what the check costs)."""
    import zlib

    return sum(zlib.crc32(b) for b in _MEMBERS[path])


_MEMBERS: dict[Path, list[bytes]] = {}


def previous_loader(path: Path) -> int:
    """The pre-in-place bridge-2 loader: inflate-free zip read into bytes, h5py over BytesIO, copy out."""
    from ptycho_bridge import read_archive
    from ptycho_bridge.formats.bridge2.layout import TENSOR_GROUP
    from ptycho_bridge.io.h5 import get_dataset, open_h5, read_array
    from ptycho_bridge.io.safezip import SafeZip

    arch = read_archive(path)  # same manifest/params work as load_all
    total = 0
    with SafeZip(path) as zf:
        for m in arch.models.values():
            member = m.payload["weights"]
            f = open_h5(zf.read(member), member=member)
            for name in m.tensor_info:
                total += read_array(get_dataset(f, f"/{TENSOR_GROUP}/{name}", member=member), member=member).nbytes
            f.close()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from ptycho_bridge import read_archive

    before = load()
    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    sources = [
        ("bridge-2 (from tf_N64_gs1)", migrate_fixture(fixture("tf_N64_gs1"), tmp / "a.zip")),
        ("bridge-2 (from tf_N128_gs1)", migrate_fixture(fixture("tf_N128_gs1"), tmp / "b.zip")),
        ("bridge-2 (from torch_N64_gs1)", migrate_fixture(fixture("torch_N64_gs1"), tmp / "c.zip")),
        ("bridge-2 (synthetic N128 x4 filters)", synthetic_large(tmp / "big.zip")),
        ("tf-modelmanager-1 tf_N64_gs1", fixture("tf_N64_gs1")),
        ("tf-modelmanager-1 tf_N128_gs1", fixture("tf_N128_gs1")),
        ("torch-bundle-2 torch_N64_gs1", fixture("torch_N64_gs1")),
        ("lightning-ckpt torch_N64_gs1", fixture("torch_N64_gs1", "lightning.ckpt")),
    ]
    rows = []
    for label, path in sources:
        size = path.stat().st_size
        tensor_bytes = load_all(path)
        plain = min(time_call(lambda path=path: Path(path).read_bytes(), args.repeat), time_call(lambda path=path: readinto(path), args.repeat))
        both = time_call(lambda path=path: load_all(path), args.repeat)
        only = time_call(lambda path=path: read_archive(path), args.repeat)
        row = {"archive": label, "file MB": size / MB, "tensor MB": tensor_bytes / MB,
               "plain read MB/s": size / MB / plain, "read+tensors ms": both * 1e3, "read only ms": only * 1e3,
               "tensor MB/s": tensor_bytes / MB / both, "% of plain": 100 * (tensor_bytes / both) / (size / plain)}
        rows.append(row)
        if label.startswith("bridge-2"):
            unverified = time_call(lambda path=path: load_all(path, verify=False), args.repeat)
            unverified_only = time_call(lambda path=path: read_archive(path, verify=False), args.repeat)
            rows.append({"archive": "  unverified (verify=False / --no-verify)", "file MB": size / MB,
                         "tensor MB": tensor_bytes / MB, "plain read MB/s": size / MB / plain,
                         "read+tensors ms": unverified * 1e3, "read only ms": unverified_only * 1e3,
                         "tensor MB/s": tensor_bytes / MB / unverified,
                         "% of plain": 100 * (tensor_bytes / unverified) / (size / plain)})
            prev = time_call(lambda path=path: previous_loader(path), args.repeat)
            rows.append({"archive": "  previous loader (zip read + h5py BytesIO)", "file MB": size / MB,
                         "tensor MB": tensor_bytes / MB, "plain read MB/s": size / MB / plain,
                         "read+tensors ms": prev * 1e3, "tensor MB/s": tensor_bytes / MB / prev,
                         "% of plain": 100 * (tensor_bytes / prev) / (size / plain)})
            from ptycho_bridge.io.safezip import SafeZip

            with SafeZip(path) as zf:
                _MEMBERS[path] = [zf.read(n) for n in zf.names() if n.endswith("weights.h5")]
            raw = time_call(lambda path=path: member_bytes_only(path), args.repeat)
            crc = time_call(lambda path=path: member_crc_only(path), args.repeat)
            rows.append({"archive": "  ablation: member bytes read in place, no CRC/HDF5",
                         "read+tensors ms": raw * 1e3, "tensor MB/s": tensor_bytes / MB / raw,
                         "% of plain": 100 * (tensor_bytes / raw) / (size / plain)})
            rows.append({"archive": "  ablation: CRC-32 of the members alone", "read+tensors ms": crc * 1e3})
    emit(f"tensor read bandwidth (median, page cache warm; load average 1/5/15 min before {before}, after {load()})",
         rows, args.json)


if __name__ == "__main__":
    main()
