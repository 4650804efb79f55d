"""Read a LevelDB-format table (TensorFlow's ``table::Table``), i.e. a TensorBundle ``.index`` file.

Why: ``variables/variables.index`` maps checkpoint keys to ``BundleEntryProto`` values in an SSTable.
Format (leveldb/table_format.md; tensorflow/tsl/lib/io/{format,block,table}.cc), as found in the
fixture (shared/fixtures/upstream-savedmodel/FORMAT.md §3):

* footer = last 48 bytes: metaindex BlockHandle, index BlockHandle (each ``varint64 offset,
  varint64 size``), zero padding to 40 bytes, then magic ``0xdb4775248b80fb57`` (u64 LE);
* a block = ``size`` bytes of contents, then a 5-byte trailer: compression type (0 none, 1 snappy)
  and the masked crc32c of contents + type byte;
* block contents = entries ``varint32 shared, varint32 non_shared, varint32 value_len, key delta,
  value``, then ``u32 restart[num_restarts]``, then ``u32 num_restarts``;
* the index block maps separator keys to data-block handles; the metaindex block is empty.

Everything is bounded: varints (max 5/10 bytes, value range), every handle against the file
length, entry/key/value counts and sizes, strictly increasing keys, restart offsets in range.
Only uncompressed blocks are accepted (TF writes bundles uncompressed); snappy is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from converters.tensorflow.savedmodel.crc import masked_crc32c
from ptycho_bridge.errors import (
    ArchiveLimitError,
    ChecksumError,
    FormatError,
    UnsupportedError,
)

MAGIC = 0xDB4775248B80FB57
FOOTER = 48
TRAILER = 5
COMPRESSION = {0: "none", 1: "snappy", 2: "zlib"}


@dataclass(frozen=True)
class TableLimits:
    max_file: int = 64 * 1024 * 1024
    max_entries: int = 100_000
    max_key: int = 4096
    max_value: int = 1024 * 1024
    max_blocks: int = 10_000


def read_varint(buf: bytes, pos: int, end: int, *, bits: int, member: str, field: str) -> tuple[int, int]:
    """Little-endian base-128 varint of at most ``bits`` bits starting at ``pos`` (< ``end``)."""
    result = 0
    shift = 0
    limit = (bits + 6) // 7
    for _ in range(limit):
        if pos >= end:
            raise FormatError(f"varint runs past the end of its region (offset {pos})", member=member, field=field)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >> bits:
                raise FormatError(f"varint value {result} overflows {bits} bits", member=member, field=field)
            return result, pos
        shift += 7
    raise FormatError(f"varint longer than {limit} bytes (overflow)", member=member, field=field)


@dataclass(frozen=True)
class BlockHandle:
    offset: int
    size: int


def _handle(buf: bytes, pos: int, end: int, *, member: str, field: str) -> tuple[BlockHandle, int]:
    off, pos = read_varint(buf, pos, end, bits=64, member=member, field=f"{field}.offset")
    size, pos = read_varint(buf, pos, end, bits=64, member=member, field=f"{field}.size")
    return BlockHandle(off, size), pos


def read_footer(data: bytes, *, member: str) -> tuple[BlockHandle, BlockHandle]:
    if len(data) < FOOTER:
        raise FormatError(f"{len(data)} bytes, shorter than the {FOOTER}-byte table footer (truncated?)",
                           member=member, field="footer")
    start = len(data) - FOOTER
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != MAGIC:
        raise FormatError(f"bad table magic 0x{magic:016x} (expected 0x{MAGIC:016x}; truncated or not an SSTable)",
                           member=member, field="footer.magic")
    meta, pos = _handle(data, start, len(data) - 8, member=member, field="footer.metaindex")
    index, pos = _handle(data, pos, len(data) - 8, member=member, field="footer.index")
    if any(data[pos : len(data) - 8]):
        raise FormatError("non-zero footer padding", member=member, field="footer")
    return meta, index


def read_block(data: bytes, handle: BlockHandle, *, member: str, field: str) -> bytes:
    """Block contents after checking bounds, the compression type and the masked crc32c."""
    body_end = len(data) - FOOTER
    if handle.offset > body_end or handle.size > body_end - handle.offset or \
            handle.offset + handle.size + TRAILER > body_end:
        raise FormatError(f"block handle offset={handle.offset} size={handle.size} lies outside the "
                           f"{body_end}-byte table body", member=member, field=field)
    contents = data[handle.offset : handle.offset + handle.size]
    ctype = data[handle.offset + handle.size]
    (stored,) = struct.unpack_from("<I", data, handle.offset + handle.size + 1)
    actual = masked_crc32c(contents + bytes([ctype]))
    if stored != actual:
        raise ChecksumError(f"block crc32c (masked) 0x{stored:08x} != computed 0x{actual:08x}",
                             member=member, field=f"{field}.crc32c")
    if ctype != 0:
        raise UnsupportedError(f"block compression type {ctype} ({COMPRESSION.get(ctype, 'unknown')}); "
                                "only uncompressed blocks are supported", member=member, field=f"{field}.compression")
    return contents


def iter_block(contents: bytes, *, member: str, field: str, limits: TableLimits) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of one block, keys reconstructed from their shared prefixes."""
    n = len(contents)
    if n < 4:
        raise FormatError("block shorter than its restart count", member=member, field=field)
    (num_restarts,) = struct.unpack_from("<I", contents, n - 4)
    if num_restarts == 0 or num_restarts > (n - 4) // 4:
        raise FormatError(f"restart count {num_restarts} impossible for a {n}-byte block", member=member, field=field)
    limit = n - 4 - 4 * num_restarts
    restarts = struct.unpack_from(f"<{num_restarts}I", contents, limit)
    if restarts[0] != 0 or list(restarts) != sorted(set(restarts)) or (limit > 0 and restarts[-1] >= limit) \
            or (limit == 0 and num_restarts != 1):
        raise FormatError(f"restart offsets {list(restarts)[:8]} invalid for {limit} bytes of entries",
                           member=member, field=field)
    restart_set = set(restarts)
    out: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        if len(out) >= limits.max_entries:
            raise ArchiveLimitError(f"more than {limits.max_entries} entries", member=member, field=field)
        at = pos
        shared, pos = read_varint(contents, pos, limit, bits=32, member=member, field=f"{field}.shared")
        non_shared, pos = read_varint(contents, pos, limit, bits=32, member=member, field=f"{field}.non_shared")
        vlen, pos = read_varint(contents, pos, limit, bits=32, member=member, field=f"{field}.value_length")
        if shared > len(key) or (at in restart_set and shared):
            raise FormatError(f"entry at {at} shares {shared} bytes of a {len(key)}-byte previous key",
                               member=member, field=field)
        if shared + non_shared > limits.max_key or vlen > limits.max_value:
            raise ArchiveLimitError(f"key of {shared + non_shared} or value of {vlen} bytes exceeds the limits",
                              member=member, field=field)
        if non_shared + vlen > limit - pos:
            raise FormatError(f"entry at {at} runs past the block ({non_shared}+{vlen} bytes)", member=member, field=field)
        new_key = key[:shared] + contents[pos : pos + non_shared]
        pos += non_shared
        if out and new_key <= key:
            raise FormatError(f"keys not strictly increasing ({key!r} then {new_key!r})", member=member, field=field)
        key = new_key
        out.append((key, contents[pos : pos + vlen]))
        pos += vlen
    return out


def read_table(data: bytes, *, member: str, limits: TableLimits = TableLimits()) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table in key order."""
    if len(data) > limits.max_file:
        raise ArchiveLimitError(f"table is {len(data)} bytes, limit {limits.max_file}", member=member, field="size")
    meta_h, index_h = read_footer(data, member=member)
    meta = iter_block(read_block(data, meta_h, member=member, field="metaindex"), member=member,
                      field="metaindex", limits=limits)
    if meta:
        raise UnsupportedError(f"metaindex has {len(meta)} entries (filters?); TF bundles have none",
                                member=member, field="metaindex")
    index = iter_block(read_block(data, index_h, member=member, field="index"), member=member,
                       field="index", limits=limits)
    if len(index) > limits.max_blocks:
        raise ArchiveLimitError(f"{len(index)} data blocks, limit {limits.max_blocks}", member=member, field="index")
    entries: list[tuple[bytes, bytes]] = []
    seen_handles: set[int] = set()
    for i, (sep, value) in enumerate(index):
        field = f"index[{i}]"
        handle, end = _handle(value, 0, len(value), member=member, field=field)
        if end != len(value):
            raise FormatError("trailing bytes after a block handle", member=member, field=field)
        if handle.offset in seen_handles:
            raise FormatError(f"data block at offset {handle.offset} listed twice", member=member, field=field)
        seen_handles.add(handle.offset)
        block = iter_block(read_block(data, handle, member=member, field=f"data_block[{i}]"), member=member,
                           field=f"data_block[{i}]", limits=limits)
        for key, val in block:
            if entries and key <= entries[-1][0]:
                raise FormatError(f"key {key!r} out of order across blocks", member=member, field=f"data_block[{i}]")
            if key > sep:
                raise FormatError(f"key {key!r} is above its index separator {sep!r}", member=member,
                                   field=f"data_block[{i}]")
            entries.append((key, val))
            if len(entries) > limits.max_entries:
                raise ArchiveLimitError(f"more than {limits.max_entries} entries", member=member, field="entries")
    return entries
