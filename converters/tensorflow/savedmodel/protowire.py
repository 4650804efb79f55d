"""The handful of TensorFlow/Keras protobuf messages this era needs, built at runtime, parsed bounded.

Why: the SavedModel era stores its layer names and wiring in ``keras_metadata.pb`` (``SavedMetadata``)
and its weights index as ``BundleHeaderProto``/``BundleEntryProto`` values whose object graph is a
``TrackableObjectGraph``. TensorFlow's generated ``*_pb2`` modules would drag TensorFlow in, so the
message descriptors are declared here with ``descriptor_pb2`` and turned into classes with
``message_factory`` in a private pool: the ``protobuf`` runtime does the wire decoding, nothing is
generated or imported from TF. Only fields we read are declared; others are kept as unknown fields.
Field numbers follow tensorflow/core/protobuf/{saved_metadata?,tensor_bundle,trackable_object_graph}.proto,
tensorflow/core/framework/{tensor_shape,tensor_slice,versions}.proto and
keras/protobuf/saved_metadata.proto (shared/fixtures/upstream-savedmodel/FORMAT.md §3-4 lists the ones relied on).

Bounds: the caller states a byte limit per message; the runtime (upb) limits nesting to 100 by
default and none of these messages are recursive. Metadata JSON is depth-checked *before*
``json.loads`` (whose C scanner recurses) and parsed without NaN literals or duplicate keys.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveLimitError, FormatError

if TYPE_CHECKING:
    from google.protobuf.message import Message

# protobuf (~20-35 ms to import) is imported on first use, not at module import: era detection imports
# this module for every archive, and only SavedModel-era archives need it (docs/performance.md)
_TYPE_NAMES = {"int32": "TYPE_INT32", "int64": "TYPE_INT64", "string": "TYPE_STRING", "bool": "TYPE_BOOL",
               "fixed32": "TYPE_FIXED32", "bytes": "TYPE_BYTES", "enum_int": "TYPE_INT32"}
PACKAGE = "ptycho_bridge_savedmodel"

# message name -> [(field name, number, type or message name, repeated)]
MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "VersionDef": [("producer", 1, "int32", False), ("min_consumer", 2, "int32", False),
                   ("bad_consumers", 3, "int32", True)],
    # keras/protobuf/saved_metadata.proto
    "SavedObject": [("node_id", 2, "int32", False), ("node_path", 3, "string", False),
                    ("identifier", 4, "string", False), ("metadata", 5, "string", False),
                    ("version", 6, ".VersionDef", False)],
    "SavedMetadata": [("nodes", 1, ".SavedObject", True)],
    # tensorflow/core/framework/tensor_shape.proto, tensor_slice.proto
    "Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "TensorShapeProto": [("dim", 2, ".Dim", True), ("unknown_rank", 3, "bool", False)],
    "Extent": [("start", 1, "int64", False), ("length", 2, "int64", False)],
    "TensorSliceProto": [("extent", 1, ".Extent", True)],
    # tensorflow/core/protobuf/tensor_bundle.proto (dtype / endianness enums read as int32: same wire type)
    "BundleHeaderProto": [("num_shards", 1, "int32", False), ("endianness", 2, "enum_int", False),
                          ("version", 3, ".VersionDef", False)],
    "BundleEntryProto": [("dtype", 1, "enum_int", False), ("shape", 2, ".TensorShapeProto", False),
                         ("shard_id", 3, "int32", False), ("offset", 4, "int64", False),
                         ("size", 5, "int64", False), ("crc32c", 6, "fixed32", False),
                         ("slices", 7, ".TensorSliceProto", True)],
    # tensorflow/core/protobuf/trackable_object_graph.proto
    "ObjectReference": [("node_id", 1, "int32", False), ("local_name", 2, "string", False)],
    "SerializedTensor": [("name", 1, "string", False), ("full_name", 2, "string", False),
                         ("checkpoint_key", 3, "string", False)],
    "SlotVariableReference": [("original_variable_node_id", 1, "int32", False), ("slot_name", 2, "string", False),
                              ("slot_variable_node_id", 3, "int32", False)],
    "TrackableObject": [("children", 1, ".ObjectReference", True), ("attributes", 2, ".SerializedTensor", True),
                        ("slot_variables", 3, ".SlotVariableReference", True)],
    "TrackableObjectGraph": [("nodes", 1, ".TrackableObject", True)],
}


@lru_cache(maxsize=None)
def _classes() -> dict[str, type[Message]]:
    """Message classes from a private descriptor pool (built once per process)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    _F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="ptycho_bridge_savedmodel.proto", package=PACKAGE, syntax="proto3")
    for msg_name, fields in MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        for fname, number, ftype, repeated in fields:
            f = msg.field.add(name=fname, number=number,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if ftype.startswith("."):
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".{PACKAGE}{ftype}"
            else:
                f.type = getattr(_F, _TYPE_NAMES[ftype])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in MESSAGES}


def message_class(name: str) -> type[Message]:
    return _classes()[name]


def parse(name: str, data: bytes, *, member: str, field: str | None = None, max_bytes: int) -> Any:
    """Decode ``data`` as message ``name``; bounded by ``max_bytes``; errors name member and field."""
    if len(data) > max_bytes:
        raise ArchiveLimitError(f"{name} is {len(data)} bytes, limit {max_bytes}", member=member, field=field or name)
    from google.protobuf.message import DecodeError

    msg = message_class(name)()
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, RecursionError, ValueError, TypeError) as exc:
        raise FormatError(f"not a valid {name} protobuf ({exc.__class__.__name__}: {exc})"[:300],
                           member=member, field=field or name) from None
    return msg


# -- metadata JSON ------------------------------------------------------------------------------
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
MAX_JSON_DEPTH = 64


def json_depth(text: bytes) -> int:
    """Maximum bracket nesting of JSON text, strings excluded (linear, no recursion)."""
    stripped = _STRING.sub(b'""', text)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    step = np.zeros(arr.size, dtype=np.int64)
    step[(arr == ord("[")) | (arr == ord("{"))] = 1
    step[(arr == ord("]")) | (arr == ord("}"))] = -1
    return int(np.cumsum(step).max()) if arr.size else 0


def load_json(text: str, *, member: str, field: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict, bounded JSON: size and nesting checked first; no NaN/Infinity; no duplicate keys."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise ArchiveLimitError(f"JSON is {len(raw)} bytes, limit {max_bytes}", member=member, field=field)
    depth = json_depth(raw)
    if depth > max_depth:
        raise ArchiveLimitError(f"JSON nested {depth} levels deep, limit {max_depth}", member=member, field=field)

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FormatError(f"duplicate JSON key {key!r}", member=member, field=field)
            out[key] = value
        return out

    def no_constants(token: str) -> Any:
        raise FormatError(f"non-standard JSON constant {token}", member=member, field=field)

    try:
        return json.loads(text, object_pairs_hook=no_dupes, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise FormatError(f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                           member=member, field=field) from None
    except RecursionError:
        raise ArchiveLimitError("JSON nested too deeply", member=member, field=field) from None
