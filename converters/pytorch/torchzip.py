"""Read ``torch.save`` zip files (``model.pth``, ``*.pt``, Lightning ``.ckpt``) without PyTorch.

Why: ``torch.load`` imports torch (seconds, hundreds of MB) and, without ``weights_only``, runs
arbitrary pickle code. The zip layout is simple: one top-level folder ``<prefix>/`` holding
``data.pkl`` (the pickle), ``data/<key>`` (one raw little-endian storage per key), ``byteorder``,
``version`` and friends. ``data.pkl`` points at storages through persistent ids
``('storage', <storage type>, key, location, numel)``; we resolve those to
:class:`~ptycho_bridge.safepickle.TensorStorage` and let :func:`~ptycho_bridge.safepickle.decode`
build the ndarrays.

The writer (:func:`torch_zip_bytes`) is the same layout in reverse, written without torch: a
protocol-2 ``data.pkl`` (:class:`TorchPickleWriter`) whose only globals are the three
``torch.load(weights_only=True)`` allows for state dicts. Format constants: :mod:`converters.pytorch.layout`.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import struct
import zipfile
from typing import Any

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.layout import STORAGE_ALIGNMENT, STORAGE_CLASSES, STORAGE_DTYPES
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
from ptycho_bridge.io.safepickle.writer import PickleWriter
from ptycho_bridge.io.safezip import DEFAULT_LIMITS, Limits, SafeZip

_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ALIGN_EXTRA_ID = 0x4246  # b"FB", the extra-field id torch's own writer pads with


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
    defer_arrays: bool = False,
) -> Any:
    """Decode a ``torch.save`` zip into plain data (tensors → numpy arrays), importing no framework.

    ``defer_arrays``: tensors come out as :class:`~ptycho_bridge.io.deferred.DeferredArray` (checked,
    copied when used), so a caller that needs only shapes never imports numpy.

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
    return decode(inert, member=pickle_label, limits=pickle_limits, defer_arrays=defer_arrays)


def read_torch(zf: SafeZip, name: str, *, defer_arrays: bool = False) -> Any:
    """A ``torch.save`` zip member decoded without torch (``defer_arrays``: see :func:`load_torch_zip`)."""
    nested = zf.open_nested(name)
    try:
        return load_torch_zip(nested, member_label=nested.label, defer_arrays=defer_arrays)
    finally:
        nested.close()



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


# -- writing -------------------------------------------------------------------------------------
class TorchPickleWriter(PickleWriter):
    """:class:`PickleWriter` plus numpy arrays as torch tensors, collecting their storages.

    An array of a :data:`~converters.pytorch.layout.STORAGE_CLASSES` dtype becomes
    ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`` with the
    storage the persistent id ``('storage', torch.<T>Storage, key, 'cpu', numel)``; its little-endian
    bytes are appended to :attr:`storages` as ``(key, raw)``.
    """

    target = "a torch zip (plain data and arrays only)"

    def __init__(self) -> None:
        super().__init__()
        self.storages: list[tuple[str, bytes]] = []

    def save_array(self, arr: np.ndarray) -> None:
        storage = STORAGE_CLASSES.get(arr.dtype.name)
        if storage is None:
            raise TypeError(f"cannot store a {arr.dtype} array as a torch tensor (supported: {sorted(STORAGE_CLASSES)})")
        data = arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d arrays 0-d
        key = str(len(self.storages))
        self.storages.append((key, data.tobytes()))
        stride, step = [], 1
        for dim in reversed(data.shape):
            stride.insert(0, step)
            step *= int(dim)
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.write(pickle.MARK, pickle.MARK)
        self.str_("storage")
        self.global_("torch", storage)
        self.str_(key)
        self.str_("cpu")
        self.int_(int(data.size))
        self.write(pickle.TUPLE, pickle.BINPERSID)
        self.int_(0)  # storage offset
        self.tuple_([int(d) for d in data.shape])
        self.tuple_(stride)
        self.write(pickle.NEWFALSE)  # requires_grad
        self.global_("collections", "OrderedDict")
        self.write(pickle.EMPTY_TUPLE, pickle.REDUCE)  # backward_hooks = OrderedDict()
        self.write(pickle.TUPLE, pickle.REDUCE)


def _aligned_zipinfo(name: str, offset: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    pad = (-(offset + 30 + len(name.encode("utf-8")) + 4)) % STORAGE_ALIGNMENT
    info.extra = struct.pack("<HH", _ALIGN_EXTRA_ID, pad) + b"Z" * pad
    return info


def torch_zip_bytes(obj: Any, *, prefix: str = "archive") -> bytes:
    """``torch.save(obj)`` bytes, written without torch: the zip format torch ≥ 1.6 reads.

    Members (in torch's order): ``data.pkl``, ``.format_version``, ``.storage_alignment``,
    ``byteorder``, ``data/<key>`` (one per array, little-endian, data 64-byte aligned), ``version``
    and ``.data/serialization_id`` (derived from the content, so equal input gives equal bytes).
    """
    writer = TorchPickleWriter()
    pkl = writer.dumps(obj)
    digest = hashlib.sha256(pkl)
    for _key, raw in writer.storages:
        digest.update(raw)
    serial = str(int(digest.hexdigest(), 16) % 10**40).zfill(40)
    records: list[tuple[str, bytes]] = [
        ("data.pkl", pkl), (".format_version", b"1"), (".storage_alignment", str(STORAGE_ALIGNMENT).encode()),
        ("byteorder", b"little"),
        *((f"data/{key}", raw) for key, raw in writer.storages),
        ("version", b"3\n"), (".data/serialization_id", serial.encode()),
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=False) as zf:
        for name, data in records:
            zf.writestr(_aligned_zipinfo(f"{prefix}/{name}", buf.tell()), data)
    return buf.getvalue()


__all__ = ["TorchPickleWriter", "is_torch_zip", "load_torch_bytes", "load_torch_zip", "torch_zip_bytes"]
