"""Read ``torch.save`` zip files (``model.pth``, ``*.pt``, Lightning ``.ckpt``) without PyTorch.

Why: ``torch.load`` imports torch (seconds, hundreds of MB) and, without ``weights_only``, runs
arbitrary pickle code. The zip layout is simple: one top-level folder ``<prefix>/`` holding
``data.pkl`` (the pickle), ``data/<key>`` (one raw little-endian storage per key), ``byteorder``,
``version`` and friends. ``data.pkl`` points at storages through persistent ids
``('storage', <storage type>, key, location, numel)``; we resolve those to
:class:`~ptycho_bridge.safepickle.TensorStorage` and let :func:`~ptycho_bridge.safepickle.decode`
build the ndarrays.
"""

from __future__ import annotations

import re
from typing import Any

from ptycho_bridge.errors import FormatError, PickleDecodeError, UnsupportedError
from ptycho_bridge.io.safepickle import (
    DEFAULT_PICKLE_LIMITS,
    TORCH_DTYPES,
    Global,
    PickleLimits,
    TensorStorage,
    decode,
    load_inert,
    short_repr,
)
from ptycho_bridge.io.safezip import DEFAULT_LIMITS, Limits, SafeZip

# torch.<Name>Storage -> torch dtype name (see safepickle.TORCH_DTYPES)
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",  # torch itself loads untyped storages as bytes
}
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_ZIP_MAGIC = b"PK\x03\x04"


def _prefix(zf: SafeZip) -> str | None:
    """The one top-level folder that holds ``data.pkl``, or None when this is not a torch zip."""
    found = {name[: -len("/data.pkl")] for name in zf.names() if name.endswith("/data.pkl") and name.count("/") == 1}
    return found.pop() if len(found) == 1 else None


def is_torch_zip(zf: SafeZip) -> bool:
    """True when the zip has the ``torch.save`` layout (exactly one ``<prefix>/data.pkl``)."""
    return _prefix(zf) is not None


def load_torch_zip(
    zf: SafeZip,
    *,
    member_label: str | None = None,
    pickle_limits: PickleLimits = DEFAULT_PICKLE_LIMITS,
) -> Any:
    """Decode a ``torch.save`` zip into plain data (tensors → numpy arrays), importing no framework.

    ``member_label`` names the zip in messages (default: the zip's own label). Storages are read once
    each, sized-checked against ``numel`` before use, and never shared with the returned arrays.
    """
    label = member_label or zf.label
    prefix = _prefix(zf)
    if prefix is None:
        raise FormatError("not a torch zip serialization (no single '<prefix>/data.pkl')", member=label)

    def where(name: str) -> str:
        return f"{label}:{name}"

    byteorder_name = f"{prefix}/byteorder"
    if byteorder_name in zf:
        order = zf.read(byteorder_name, max_size=64).strip()
        if order == b"big":
            raise UnsupportedError("big-endian torch storages are not supported", member=where(byteorder_name))
        if order != b"little":
            raise FormatError(f"unknown byteorder {order[:20]!r}", member=where(byteorder_name))

    pickle_name = f"{prefix}/data.pkl"
    pickle_label = where(pickle_name)
    raw_cache: dict[str, bytes] = {}
    storages: dict[tuple[str, str], TensorStorage] = {}

    def persistent_load(pid: Any) -> TensorStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise PickleDecodeError(f"unsupported persistent id {short_repr(pid)}", member=pickle_label)
        _, storage_type, key, _location, numel = pid
        if not (isinstance(storage_type, Global) and storage_type.module in ("torch", "torch.storage")
                and storage_type.name in STORAGE_DTYPES):
            kind = storage_type.dotted if isinstance(storage_type, Global) else type(storage_type).__name__
            raise PickleDecodeError(f"unsupported storage type {kind}", member=pickle_label)
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise PickleDecodeError(f"bad storage key {short_repr(key)}", member=pickle_label)
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise PickleDecodeError(f"bad element count {short_repr(numel)} for storage {key}", member=pickle_label)
        dtype = STORAGE_DTYPES[storage_type.name]
        if (key, dtype) in storages:
            return storages[(key, dtype)]
        name = f"{prefix}/data/{key}"
        if name not in zf:
            raise PickleDecodeError(f"storage {key} is missing (no member {name})", member=pickle_label)
        expected = numel * TORCH_DTYPES[dtype][1]
        size = zf.info(name).size
        if size != expected:
            raise PickleDecodeError(
                f"storage {key} holds {size} bytes, expected {expected} ({numel} × {dtype})", member=where(name)
            )
        if key not in raw_cache:
            raw_cache[key] = zf.read(name)
        storages[(key, dtype)] = TensorStorage(key, raw_cache[key], dtype)
        return storages[(key, dtype)]

    data = zf.read(pickle_name)
    inert = load_inert(data, member=pickle_label, persistent_load=persistent_load, limits=pickle_limits)
    return decode(inert, member=pickle_label, limits=pickle_limits)


def load_torch_bytes(
    data: bytes,
    *,
    label: str,
    limits: Limits = DEFAULT_LIMITS,
    pickle_limits: PickleLimits = DEFAULT_PICKLE_LIMITS,
) -> Any:
    """:func:`load_torch_zip` for a member already in memory (``model.pth`` inside ``wts.h5.zip``)."""
    if not data.startswith(_ZIP_MAGIC) and data[:1] == b"\x80":
        raise UnsupportedError("legacy (pre-1.6, non-zip) torch serialization is not supported", member=label)
    with SafeZip(data, label=label, limits=limits, depth=1) as zf:
        return load_torch_zip(zf, member_label=label, pickle_limits=pickle_limits)
