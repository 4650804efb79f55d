"""Zip-level access to ``.npz`` members without ``np.load``: header parsing, in-place memory maps, streaming.

Why not ``np.load``: it loads a whole member (800 MB for a 50k-pattern scan) and would unpickle object
arrays if ever asked to. Here each member's ``.npy`` header is parsed with numpy's own header readers
(``ast.literal_eval`` on a size-bounded header, never pickle), object / structured dtypes are refused,
and the array bytes are reached without loading them:

- **stored** (``ZIP_STORED``) members: the array data is a contiguous byte range of the outer file.
  Its offset = local-file-header offset + 30 + name length + extra length (both read from the *local*
  header, which may differ from the central directory's) + the ``.npy`` header length. The caller then
  ``np.memmap``s the outer file at that offset (checked: the bytes there start with the npy magic).
- **deflated** members: decompressed as a stream, chunk by chunk (``ZipExtFile.read``), or spooled once
  to a temporary file that is then memory-mapped (needed for random access).

Every declared size is checked against the zip's declared uncompressed size before anything is read, and a
deflated member may not claim more than :data:`MAX_RATIO` times its compressed size (more than deflate can
produce: a 1 kB member claiming 100 GB is refused before inflating a byte). Decompression failures (truncated or
corrupt deflate streams, CRC mismatches) surface as :class:`CorruptArchiveError` naming the key, wherever they
happen (header parse, small-key read, pattern stream, spool).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import CorruptArchiveError, FormatError, UnsafeArchiveError

MAX_NPY_HEADER = 10_000  # numpy's own default bound for header parsing
MAX_MEMBERS = 4096  # a scan dataset has a handful of keys; a zip with thousands of members is refused
MAX_RATIO = 1100  # deflate's ceiling is ~1032:1; a larger claim is a lie (or a bomb)
RATIO_FLOOR = 1 << 16  # members smaller than this are not ratio-checked (tiny headers compress oddly)
# what zipfile / zlib raise on a truncated, corrupt or lying deflate stream
INFLATE_ERRORS = (EOFError, zlib.error, zipfile.BadZipFile, OSError, ValueError, NotImplementedError)
_LOCAL_HEADER_SIG = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class NpzMember:
    """One ``.npy`` member of an ``.npz``: its array header and where its bytes are."""

    key: str  # member name without ".npy"
    name: str  # member name in the zip
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_len: int  # bytes of the npy header (magic + version + length + dict)
    stored: bool  # ZIP_STORED: data_offset is valid for np.memmap of the outer file
    data_offset: int  # absolute offset of the array data in the outer file (stored members only, else -1)
    nbytes: int


def check_dtype(key: str, dtype: np.dtype) -> None:
    """Refuse object (pickled), structured and sub-array dtypes, naming the key."""
    if dtype.hasobject:
        raise FormatError(f"object dtype {dtype} (pickled data) is refused; store a numeric array", field=key)
    if dtype.fields is not None or dtype.subdtype is not None:
        raise FormatError(f"structured dtype {dtype} is refused; expected a plain numeric array", field=key)


def _parse_header(fp: BinaryIO, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header_len) of an npy stream positioned at its start."""
    fmt = np.lib.format
    try:
        major, minor = fmt.read_magic(fp)
        if (major, minor) == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
        elif (major, minor) == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
        else:
            raise FormatError(f"npy format version {major}.{minor} is not supported (1.0 and 2.0 are)", field=key)
    except FormatError:
        raise
    except Exception as exc:  # numpy's header parsing (literal_eval, tokenize) raises ValueError, SyntaxError,
        # tokenize.TokenError, TypeError ... on a hostile header; the header is at most MAX_NPY_HEADER bytes
        raise FormatError(f"unreadable .npy header ({exc.__class__.__name__}: {exc})"[:300], field=key) from None
    check_dtype(key, dtype)
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise FormatError(f"invalid shape {shape}", field=key)
    return tuple(int(d) for d in shape), bool(fortran), dtype, int(fp.tell())


def _local_data_start(raw: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Offset of the member's (stored) data in the outer file, from its local file header."""
    raw.seek(info.header_offset)
    hdr = raw.read(30)
    if len(hdr) != 30 or hdr[:4] != _LOCAL_HEADER_SIG:
        raise CorruptArchiveError("bad local file header", field=info.filename)
    name_len, extra_len = struct.unpack("<HH", hdr[26:30])
    return info.header_offset + 30 + name_len + extra_len


def scan_npz(path: str) -> dict[str, NpzMember]:
    """Parse every ``*.npy`` member header of an ``.npz`` (no array data read).

    Whatever ``zipfile`` raises on a hostile central directory (``BadZipFile``, ``struct.error``, ``OverflowError``,
    ``OSError`` ...) becomes one :class:`CorruptArchiveError` "unreadable .npz" (no member or field: the caller names
    the file); every :class:`~ptycho_bridge.errors.ArchiveError` passes through unchanged."""
    try:
        return _scan_members(path)
    except (*INFLATE_ERRORS, struct.error, OverflowError) as exc:
        raise CorruptArchiveError(f"unreadable .npz: {exc.__class__.__name__}: {exc}"[:300]) from None


def _scan_members(path: str) -> dict[str, NpzMember]:
    file_size = os.path.getsize(path)
    members: dict[str, NpzMember] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        if len(zf.infolist()) > MAX_MEMBERS:
            raise FormatError(f"{len(zf.infolist())} zip members; at most {MAX_MEMBERS} are read", field="(container)")
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                continue
            key = info.filename[: -len(".npy")]
            if key in members:
                raise FormatError("duplicate zip member (two arrays under one key)", field=key)
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError("encrypted zip members are refused", field=key)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise FormatError(f"zip compression method {info.compress_type} is not supported", field=key)
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise CorruptArchiveError(f"stored member declares {info.file_size} bytes but holds "
                                          f"{info.compress_size}", field=key)
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise UnsafeArchiveError(f"member claims {info.file_size} bytes from {info.compress_size} compressed "
                                         f"(over {MAX_RATIO}:1, more than deflate produces); refused before "
                                         "inflating", field=key)
            if info.header_offset + info.compress_size > file_size:
                raise CorruptArchiveError("member data runs past the end of the file", field=key)
            try:
                with zf.open(info) as fp:
                    shape, fortran, dtype, hlen = _parse_header(fp, key)
            except INFLATE_ERRORS as exc:
                raise CorruptArchiveError(f"cannot read the .npy header ({exc.__class__.__name__}: {exc})"[:300],
                                          field=key) from None
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            nbytes = count * dtype.itemsize
            if hlen + nbytes != info.file_size:
                raise CorruptArchiveError(
                    f"header declares {shape} {dtype} ({nbytes} bytes) but the member holds "
                    f"{info.file_size - hlen} data bytes (truncated or inconsistent file)", field=key
                )
            stored = info.compress_type == zipfile.ZIP_STORED
            offset = -1
            if stored:
                start = _local_data_start(raw, info)
                raw.seek(start)
                if raw.read(6) != _NPY_MAGIC:
                    raise FormatError("stored member data does not start with the npy magic", field=key)
                offset = start + hlen
                if offset + nbytes > file_size:
                    raise FormatError("member data runs past the end of the file", field=key)
            members[key] = NpzMember(key, info.filename, shape, dtype, fortran, hlen, stored, offset, nbytes)
    return members


def read_member(path: str, m: NpzMember, max_bytes: int) -> np.ndarray:
    """Read a whole (small) member; refuses members larger than ``max_bytes``."""
    if m.nbytes > max_bytes:
        raise FormatError(f"{m.nbytes} bytes exceeds the {max_bytes}-byte bound for this key", field=m.key)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(m.name) as fp:
            fp.read(m.header_len)
            buf = fp.read(m.nbytes)
    except INFLATE_ERRORS as exc:
        raise CorruptArchiveError(f"cannot read ({exc.__class__.__name__}: {exc})"[:300], field=m.key) from None
    if len(buf) != m.nbytes:
        raise CorruptArchiveError("member is truncated", field=m.key)
    return np.frombuffer(buf, dtype=m.dtype).reshape(m.shape, order="F" if m.fortran_order else "C").copy()


class MemberStream:
    """Forward-only decompressing reader of a member's array bytes (``read(nbytes)``; ``reopen()``)."""

    def __init__(self, path: str, m: NpzMember) -> None:
        self.path, self.m = path, m
        self._zf: zipfile.ZipFile | None = None
        self._fp: BinaryIO | None = None
        self.pos = 0  # bytes of array data consumed
        self.reopens = 0
        self.reopen()
        self.reopens = 0

    def reopen(self) -> None:
        self.close()
        try:
            self._zf = zipfile.ZipFile(self.path)
            self._fp = self._zf.open(self.m.name)
            self._fp.read(self.m.header_len)
        except INFLATE_ERRORS as exc:
            self.close()
            raise CorruptArchiveError(f"cannot reopen ({exc.__class__.__name__}: {exc})"[:300], field=self.m.key) from None
        self.pos = 0
        self.reopens += 1

    def read(self, nbytes: int) -> bytes:
        if self._fp is None:
            raise CorruptArchiveError("stream is closed", field=self.m.key)
        try:
            buf = self._fp.read(nbytes)
        except INFLATE_ERRORS as exc:  # truncated or corrupt deflate data, CRC mismatch at the end
            raise CorruptArchiveError(f"cannot inflate ({exc.__class__.__name__}: {exc})"[:300], field=self.m.key) from None
        if len(buf) != nbytes:
            raise CorruptArchiveError("member is truncated", field=self.m.key)
        self.pos += nbytes
        return buf

    def skip(self, nbytes: int, block: int = 1 << 24) -> None:
        while nbytes > 0:
            step = min(nbytes, block)
            self.read(step)
            nbytes -= step

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
        if self._zf is not None:
            self._zf.close()
        self._fp = self._zf = None


def spool_member(path: str, m: NpzMember, spool_dir: str | None = None, block: int = 1 << 24) -> str:
    """Decompress a member's array bytes into a temporary file (chunk by chunk); returns its path.

    Free space in the target directory is checked first (array size + 64 MiB margin).
    The caller deletes the file.
    """
    d = spool_dir or tempfile.gettempdir()
    free = shutil.disk_usage(d).free
    if m.nbytes + (64 << 20) > free:
        raise FormatError(f"spooling needs {m.nbytes} bytes but only {free} are free in {d}", field=m.key)
    fd, tmp = tempfile.mkstemp(prefix="reconstruct_spool_", suffix=".bin", dir=d)
    stream = MemberStream(path, m)
    try:
        with os.fdopen(fd, "wb") as out:
            left = m.nbytes
            while left:
                step = min(left, block)
                out.write(stream.read(step))
                left -= step
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        stream.close()
    return tmp
