"""Builders for hostile SavedModel-era archives (test code: writes bytes, runs nothing it reads).

Why: each hostile case must reach the check it targets, so the surrounding bytes must stay valid:
a rewritten index gets correct block crcs (unless the case is about crcs), a rewritten object graph
gets correct string-tensor checksums, and the zip is re-deflated with correct CRC-32s. The SSTable
writer follows LevelDB's TableBuilder (restart interval 16, one data block, empty metaindex, index
separator = short successor of the last key); on the fixture it reproduces the index byte for byte.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from typing import Any, Callable

from converters.tensorflow.savedmodel import protowire
from converters.tensorflow.savedmodel.crc import crc32c, mask, masked_crc32c
from converters.tensorflow.savedmodel.sstable import MAGIC, read_table
from tests._support import SAVEDMODEL_DIR

FIXTURE_ZIP = SAVEDMODEL_DIR / "tf215_N64_gs1" / "wts.h5.zip"
D2O = "diffraction_to_obj"
INDEX = f"{D2O}/variables/variables.index"
DATA = f"{D2O}/variables/variables.data-00000-of-00001"
META = f"{D2O}/keras_metadata.pb"


def members(path: Any = FIXTURE_ZIP) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def to_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    out = bytearray()
    restarts: list[int] = []
    prev = b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def short_successor(key: bytes) -> bytes:
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def table(entries: list[tuple[bytes, bytes]], *, ctype: int = 0, bad_crc: bool = False) -> bytes:
    """A one-data-block SSTable (compression byte ``ctype``; contents are NOT actually compressed)."""
    out = bytearray()

    def put(contents: bytes, kind: int = 0, corrupt: bool = False) -> tuple[int, int]:
        off = len(out)
        crc = masked_crc32c(contents + bytes([kind])) ^ (1 if corrupt else 0)
        out.extend(contents + bytes([kind]) + struct.pack("<I", crc))
        return off, len(contents)

    data_h = put(block(entries), ctype, bad_crc)
    meta_h = put(block([]))
    index_h = put(block([(short_successor(entries[-1][0]), varint(data_h[0]) + varint(data_h[1]))], 1))
    handles = varint(meta_h[0]) + varint(meta_h[1]) + varint(index_h[0]) + varint(index_h[1])
    out += handles + b"\0" * (40 - len(handles)) + struct.pack("<Q", MAGIC)
    return bytes(out)


def rows(index_bytes: bytes) -> list[tuple[bytes, bytes]]:
    return read_table(index_bytes, member="builder")


def edit_entry(index_bytes: bytes, key: str, fn: Callable[[Any], None]) -> bytes:
    """Re-encode one BundleEntryProto (or the header for key "") after ``fn`` mutates it."""
    cls = protowire.message_class("BundleHeaderProto" if key == "" else "BundleEntryProto")
    out = []
    for k, v in rows(index_bytes):
        if k == key.encode():
            msg = cls()
            msg.ParseFromString(v)
            fn(msg)
            v = msg.SerializeToString()
        out.append((k, v))
    return table(out)


def string_tensor(payload: bytes) -> tuple[bytes, int]:
    """TF WriteStringTensor bytes for one element and the entry's masked crc32c."""
    n = len(payload)
    len_crc = struct.pack("<I", mask(crc32c(struct.pack("<I", n))))
    return varint(n) + len_crc + payload, masked_crc32c(struct.pack("<I", n) + len_crc + payload)


def edit_object_graph(files: dict[str, bytes], fn: Callable[[Any], None]) -> None:
    """Mutate the d2o TrackableObjectGraph; append it to the shard; repoint its index entry."""
    index = files[INDEX]
    og_entry = protowire.message_class("BundleEntryProto")()
    og_entry.ParseFromString(dict(rows(index))[b"_CHECKPOINTABLE_OBJECT_GRAPH"])
    raw = files[DATA][og_entry.offset : og_entry.offset + og_entry.size]
    n_len = 1
    while raw[n_len - 1] & 0x80:
        n_len += 1
    graph = protowire.message_class("TrackableObjectGraph")()
    graph.ParseFromString(raw[n_len + 4 :])
    fn(graph)
    blob, crc = string_tensor(graph.SerializeToString())
    offset = len(files[DATA])
    files[DATA] = files[DATA] + blob

    def repoint(e: Any) -> None:
        e.offset, e.size, e.crc32c = offset, len(blob), crc

    files[INDEX] = edit_entry(index, "_CHECKPOINTABLE_OBJECT_GRAPH", repoint)


def metadata_msg(data: bytes) -> Any:
    msg = protowire.message_class("SavedMetadata")()
    msg.ParseFromString(data)
    return msg


def edit_root_config(files: dict[str, bytes], fn: Callable[[dict[str, Any]], None], member: str = META) -> None:
    msg = metadata_msg(files[member])
    cfg = json.loads(msg.nodes[0].metadata)
    fn(cfg)
    msg.nodes[0].metadata = json.dumps(cfg)
    files[member] = msg.SerializeToString()


def set_root_json_text(files: dict[str, bytes], text: str) -> None:
    msg = metadata_msg(files[META])
    msg.nodes[0].metadata = text
    files[META] = msg.SerializeToString()
