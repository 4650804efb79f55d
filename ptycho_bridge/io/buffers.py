"""Zero-copy reads of stored zip members and of contiguous HDF5 datasets inside them.

Why: bridge-2 stores ``weights.h5`` uncompressed and aligned, so a member's bytes can be read with
one ``readinto`` at their file offset and every tensor becomes a view of that buffer; h5py parses
metadata through a file object over the buffer (:class:`BufferFile`), and the pure metadata scan
locates small datasets without libhdf5 (:func:`dataset_from_scan`). No format knowledge lives here;
every offset is bounds-checked.
"""

from __future__ import annotations

import io
import zlib

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveLimitError, CorruptArchiveError
from ptycho_bridge.io.h5 import check_dataset, read_array
from ptycho_bridge.io.h5meta import scan
from ptycho_bridge.io.safezip import SafeZip


def read_member_buffer(zf: SafeZip, member: str, *, check_crc: bool = True) -> np.ndarray:
    """A member's bytes as one uint8 array, CRC-checked unless ``check_crc`` is false.

    Why: the writer stores ``weights.h5`` uncompressed and 64-byte aligned, so its bytes sit in the
    zip file as they are. We read them straight from their offset with one ``readinto`` (no zipfile
    stream, no inflating, no chunk joins) and tensors become views of this buffer
    (:func:`tensors_at_offsets`, :func:`read_in_place`). Deflated members and in-memory containers
    fall back to ``SafeZip.read`` (always CRC-checked). The offset fast path skips the CRC-32 (it
    would double the read's cost); bridge-2 content is covered by its sha256 index instead.
    """
    info = zf.info(member)
    where = zf.member_label(member)
    offset = zf.data_offset(member)
    if offset is None or zf.path is None:
        return np.frombuffer(zf.read(member), dtype=np.uint8)
    if info.size > zf.limits.max_member_size:
        raise ArchiveLimitError(f"member is {info.size} bytes, limit here is {zf.limits.max_member_size}", member=where)
    if info.compressed_size != info.size:
        raise CorruptArchiveError(
            f"stored member declares {info.compressed_size} bytes on disk but {info.size} uncompressed", member=where
        )
    buf = np.empty(info.size, dtype=np.uint8)
    view = memoryview(buf)
    got = 0
    with open(zf.path, "rb", buffering=0) as fh:
        fh.seek(offset)
        while got < info.size:
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
    if got != info.size:
        raise CorruptArchiveError(f"member truncated: {got} of {info.size} bytes present", member=where)
    if check_crc and zlib.crc32(view) & 0xFFFFFFFF != info.crc:
        raise CorruptArchiveError("CRC-32 mismatch (corrupt data)", member=where)
    return buf


class BufferFile(io.RawIOBase):
    """A read-only file over a uint8 buffer, so h5py parses metadata without copying the whole image."""

    def __init__(self, buf: np.ndarray) -> None:
        super().__init__()
        self._buf = buf
        self._view = memoryview(buf).cast("B")
        self._pos = 0
        self.size = len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        chunk = self._view[self._pos:self._pos + len(target)]
        n = len(chunk)
        memoryview(target).cast("B")[:n] = chunk
        self._pos += n
        return n

    def span(self, offset: int, nbytes: int) -> np.ndarray:
        """Bytes ``offset..offset+nbytes`` of the image, as a view (no copy)."""
        return self._buf[offset:offset + nbytes]


def read_in_place(store: BufferFile, dset, *, member: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A checked dataset read straight from the HDF5 image when contiguous and unfiltered, else via h5py.

    The array is a view of the member buffer (no copy). Bounds: the dataset's byte range
    must lie inside the member. Unaligned data is copied (numpy and torch want aligned arrays).
    """
    check_dataset(dset, member=member)
    try:  # layout queries on a corrupt header raise assorted h5py errors
        offset = dset.id.get_offset() if dset.chunks is None and not dset.compression else None
        shape = tuple(int(d) for d in dset.shape)
        storage = dset.id.get_storage_size()
    except Exception as exc:
        raise CorruptArchiveError(f"cannot read HDF5 dataset layout {dset.name} ({exc.__class__.__name__}: {exc})",
                                  member=member) from None
    if offset is None or dset.dtype.hasobject:
        return read_array(dset, member=member)
    dtype = dset.dtype
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if storage != nbytes or offset < 0 or offset + nbytes > store.size:
        raise CorruptArchiveError(
            f"HDF5 dataset {dset.name} claims bytes {offset}..{offset + nbytes} of a {store.size}-byte file", member=member
        )
    arr = store.span(offset, nbytes).view(dtype).reshape(shape)
    return arr if arr.flags.aligned else arr.copy()


def dataset_from_scan(buf: np.ndarray, path: str, shape: list[int] | tuple[int, ...], dtype: str) -> np.ndarray | None:
    """A copy of the dataset ``path`` of the HDF5 image in ``buf`` (a member buffer), located by the pure
    metadata scan (:mod:`ptycho_bridge.io.h5meta`): no libhdf5, no forked child.

    Why: reading one small dataset (bridge-2's probe) through libhdf5 costs a fork and a parse, ≈ 10 ms and
    half the fixed cost of reading a bridge-2 archive (docs/performance.md). The scan gives the same
    answer as libhdf5 on the subset it understands (tests/io/test_h5meta.py compares offsets too), and
    ``validate`` cross-checks it against libhdf5 (:mod:`ptycho_bridge.formats.bridge2.verify`).

    None -- read it through libhdf5, which gives the authoritative value or error -- when the scan does not
    answer, the dataset is absent or was never written, or its shape or dtype (numpy's name, so native
    little-endian) is not exactly ``shape`` and ``dtype``.
    """
    top = "/" + path.lstrip("/").split("/", 1)[0]
    meta = scan(memoryview(buf), within=top)  # the dataset's top-level group alone (the tensors are not walked)
    if meta is None or path not in meta.datasets:
        return None
    found_shape, found_dtype = meta.datasets[path]
    where = meta.storage.get(path)
    if where is None or list(found_shape) != list(shape) or found_dtype != dtype:
        return None
    start, nbytes = where  # the scan checked nbytes == shape x itemsize and that the range lies in the image
    return np.frombuffer(buf, dtype=np.dtype(dtype), count=nbytes // np.dtype(dtype).itemsize,
                         offset=start).reshape(found_shape).copy()

