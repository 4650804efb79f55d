"""TensorBundle V2 (``variables/variables.{index,data-SSSSS-of-NNNNN}``) read with numpy only.

Why: the SavedModel era's weights live in a TF checkpoint, not in HDF5. The ``.index`` SSTable
(:mod:`sstable`) maps each checkpoint key to a ``BundleEntryProto`` (dtype, shape, shard, offset,
size, masked crc32c); the key ``""`` holds the ``BundleHeaderProto``. Each tensor is a raw
little-endian C-order byte range of a data shard (shared/fixtures/upstream-savedmodel/FORMAT.md §3). Every entry is validated before
any data is touched: dtype known, shape concrete and bounded, ``size`` equal to ``elements ×
itemsize``, shard in range, byte range inside the shard and not overlapping another, no slices.
Reading a tensor checks its masked crc32c. ``DT_STRING`` is accepted only as the scalar
``_CHECKPOINTABLE_OBJECT_GRAPH`` (``varint64 len, u32 masked crc of u32le(len), bytes``).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.savedmodel import protowire
from converters.tensorflow.savedmodel.crc import crc32c, mask, masked_crc32c
from converters.tensorflow.savedmodel.sstable import (
    TableLimits,
    read_table,
    read_varint,
)
from ptycho_bridge.errors import (
    ArchiveLimitError,
    ChecksumError,
    FormatError,
    UnsupportedError,
)

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
DT_STRING = 7
# tensorflow/core/framework/types.proto -> numpy (little-endian); others are refused
DTYPES: dict[int, str] = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8", 9: "<i8",
                          10: "?", 17: "<u2", 18: "<c16", 19: "<f2", 22: "<u4", 23: "<u8"}
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
               9: "int64", 10: "bool", 17: "uint16", 18: "complex128", 19: "float16", 22: "uint32", 23: "uint64"}


@dataclass(frozen=True)
class BundleLimits:
    max_tensors: int = 10_000
    max_rank: int = 8
    max_tensor_bytes: int = 2 * 1024**3
    max_shards: int = 64
    max_string_bytes: int = 16 * 1024 * 1024
    table: TableLimits = TableLimits()


@dataclass(frozen=True)
class BundleEntry:
    key: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]


@dataclass
class BundleIndex:
    member: str
    num_shards: int
    entries: dict[str, BundleEntry]


def shard_name(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


def parse_index(data: bytes, *, member: str, shard_sizes: Callable[[int, int], int],
                limits: BundleLimits = BundleLimits()) -> BundleIndex:
    """Decode and validate every entry; ``shard_sizes(i, num_shards)`` gives shard ``i``'s byte length."""
    rows = read_table(data, member=member, limits=limits.table)
    if not rows or rows[0][0] != b"":
        raise FormatError("no bundle header (empty key)", member=member, field="header")
    header = protowire.parse("BundleHeaderProto", rows[0][1], member=member, field="header", max_bytes=4096)
    if header.endianness != 0:
        raise UnsupportedError(f"endianness {header.endianness} (BIG); only LITTLE bundles are read",
                                member=member, field="header.endianness")
    if header.version.min_consumer > 1:
        raise UnsupportedError(f"bundle needs a reader of version >= {header.version.min_consumer}",
                                member=member, field="header.version.min_consumer")
    if not 1 <= header.num_shards <= limits.max_shards:
        raise FormatError(f"num_shards {header.num_shards} outside 1..{limits.max_shards}", member=member,
                           field="header.num_shards")
    if len(rows) - 1 > limits.max_tensors:
        raise ArchiveLimitError(f"{len(rows) - 1} tensors, limit {limits.max_tensors}", member=member, field="entries")
    entries: dict[str, BundleEntry] = {}
    for raw_key, value in rows[1:]:
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"key {raw_key[:40]!r} is not UTF-8", member=member, field="key") from None
        entries[key] = _entry(key, value, header.num_shards, shard_sizes, member=member, limits=limits)
    _check_overlaps(entries, member=member)
    return BundleIndex(member, header.num_shards, entries)


def _entry(key: str, value: bytes, num_shards: int, shard_sizes: Callable[[int, int], int], *, member: str,
           limits: BundleLimits) -> BundleEntry:
    where = f"{key}"
    e = protowire.parse("BundleEntryProto", value, member=member, field=where, max_bytes=64 * 1024)
    if e.dtype not in DTYPES and e.dtype != DT_STRING:
        raise UnsupportedError(f"dtype enum {e.dtype} not supported", member=member, field=f"{where}.dtype")
    if e.slices:
        raise UnsupportedError(f"{len(e.slices)} slices (partitioned variable)", member=member, field=f"{where}.slices")
    if e.shape.unknown_rank or len(e.shape.dim) > limits.max_rank:
        raise FormatError(f"shape rank {len(e.shape.dim)} / unknown_rank={e.shape.unknown_rank} not allowed",
                           member=member, field=f"{where}.shape")
    shape = tuple(int(d.size) for d in e.shape.dim)
    if any(d < 0 for d in shape):
        raise FormatError(f"shape {list(shape)} has a negative dimension", member=member, field=f"{where}.shape")
    count = 1
    for d in shape:
        count *= d
    if not 0 <= e.shard_id < num_shards:
        raise FormatError(f"shard_id {e.shard_id} outside 0..{num_shards - 1}", member=member, field=f"{where}.shard_id")
    if e.offset < 0 or e.size < 0:
        raise FormatError(f"negative offset {e.offset} or size {e.size}", member=member, field=f"{where}.offset")
    if e.dtype == DT_STRING:
        if shape != () or key != OBJECT_GRAPH_KEY:
            raise UnsupportedError(f"string tensor of shape {list(shape)}; only the scalar {OBJECT_GRAPH_KEY} is read",
                                    member=member, field=f"{where}.dtype")
        if e.size > limits.max_string_bytes:
            raise ArchiveLimitError(f"string tensor of {e.size} bytes, limit {limits.max_string_bytes}", member=member,
                              field=f"{where}.size")
    else:
        nbytes = count * np.dtype(DTYPES[e.dtype]).itemsize
        if nbytes > limits.max_tensor_bytes:
            raise ArchiveLimitError(f"shape {list(shape)} declares {nbytes} bytes, limit {limits.max_tensor_bytes}",
                              member=member, field=f"{where}.shape")
        if e.size != nbytes:
            raise FormatError(f"size {e.size} != {count} elements x {np.dtype(DTYPES[e.dtype]).itemsize} bytes",
                               member=member, field=f"{where}.size")
    shard_len = shard_sizes(e.shard_id, num_shards)
    if e.offset > shard_len or e.size > shard_len - e.offset:
        raise FormatError(f"bytes [{e.offset}, {e.offset + e.size}) lie outside the {shard_len}-byte data shard "
                           f"{e.shard_id}", member=member, field=f"{where}.offset")
    return BundleEntry(key, int(e.dtype), shape, int(e.shard_id), int(e.offset), int(e.size), int(e.crc32c))


def _check_overlaps(entries: dict[str, BundleEntry], *, member: str) -> None:
    spans = sorted((e.shard_id, e.offset, e.offset + e.size, e.key) for e in entries.values() if e.size)
    for (s0, _a0, b0, k0), (s1, a1, _b1, k1) in zip(spans, spans[1:], strict=False):
        if s0 == s1 and a1 < b0:
            raise FormatError(f"byte ranges of {k0!r} and {k1!r} overlap", member=member, field=f"{k1}.offset")


def read_tensor(entry: BundleEntry, shard: bytes | memoryview, *, member: str) -> Any:
    """The tensor's value (``np.ndarray``; ``bytes`` for the scalar string), crc32c-checked."""
    raw = memoryview(shard)[entry.offset : entry.offset + entry.size]
    if len(raw) != entry.size:
        raise FormatError(f"data shard shorter than offset+size ({entry.offset}+{entry.size})", member=member,
                           field=f"{entry.key}.offset")
    if entry.dtype == DT_STRING:
        return _read_scalar_string(entry, raw, member=member)
    actual = masked_crc32c(raw)
    if actual != entry.crc32c:
        raise ChecksumError(f"crc32c (masked) 0x{entry.crc32c:08x} != computed 0x{actual:08x}", member=member,
                             field=f"{entry.key}.crc32c")
    return np.frombuffer(raw, dtype=np.dtype(DTYPES[entry.dtype])).reshape(entry.shape).astype(
        np.dtype(DTYPES[entry.dtype]).newbyteorder("="), copy=True)


def _read_scalar_string(entry: BundleEntry, raw: memoryview, *, member: str) -> bytes:
    """TF ``WriteStringTensor`` layout for one element; both checksums verified."""
    buf = bytes(raw)
    length, pos = read_varint(buf, 0, len(buf), bits=64, member=member, field=f"{entry.key}.length")
    if pos + 4 + length != len(buf):
        raise FormatError(f"string length {length} does not fill the {len(buf)}-byte entry", member=member,
                           field=f"{entry.key}.length")
    len_bytes = struct.pack("<I", length & 0xFFFFFFFF) + (struct.pack("<Q", length) if length > 0xFFFFFFFF else b"")
    (stored_len_crc,) = struct.unpack_from("<I", buf, pos)
    if stored_len_crc != mask(crc32c(len_bytes)):
        raise ChecksumError("length checksum mismatch", member=member, field=f"{entry.key}.length_crc32c")
    covered = len_bytes + buf[pos : pos + 4] + buf[pos + 4 :]
    if masked_crc32c(covered) != entry.crc32c:
        raise ChecksumError("crc32c (masked) mismatch", member=member, field=f"{entry.key}.crc32c")
    return buf[pos + 4 :]


@dataclass(frozen=True)
class CheckpointVariable:
    checkpoint_key: str
    full_name: str
    path: tuple[str, ...]  # child local names from the root to the variable's node


def object_graph(data: bytes, *, member: str, max_nodes: int = 100_000) -> dict[str, CheckpointVariable]:
    """checkpoint key -> variable, from the ``TrackableObjectGraph``; each key must be reachable from the root.

    Why: the checkpoint key (``layer_with_weights-3/kernel/.ATTRIBUTES/VARIABLE_VALUE``) is a path of
    child names; the graph confirms that path and gives the variable's ``full_name`` (``conv2d_3/kernel``),
    which is cross-checked against the Keras config. Walk is breadth-first and bounded (aliases/cycles).
    """
    g = protowire.parse("TrackableObjectGraph", data, member=member, field=OBJECT_GRAPH_KEY, max_bytes=16 * 1024**2)
    if not g.nodes or len(g.nodes) > max_nodes:
        raise ArchiveLimitError(f"object graph has {len(g.nodes)} nodes (1..{max_nodes})", member=member, field=OBJECT_GRAPH_KEY)
    paths: dict[int, tuple[str, ...]] = {0: ()}
    queue = deque([0])
    while queue:
        node = queue.popleft()
        for child in g.nodes[node].children:
            if not 0 <= child.node_id < len(g.nodes):
                raise FormatError(f"child {child.local_name!r} points at node {child.node_id} of {len(g.nodes)}",
                                   member=member, field=OBJECT_GRAPH_KEY)
            if child.node_id not in paths:
                paths[child.node_id] = paths[node] + (child.local_name,)
                queue.append(child.node_id)
    out: dict[str, CheckpointVariable] = {}
    for node_id, node in enumerate(g.nodes):
        for attr in node.attributes:
            key = attr.checkpoint_key
            if key in out:
                raise FormatError(f"checkpoint key {key!r} claimed twice", member=member, field=OBJECT_GRAPH_KEY)
            out[key] = CheckpointVariable(key, attr.full_name, paths.get(node_id, ()))
    return out
