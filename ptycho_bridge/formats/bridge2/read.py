"""Reader for ``bridge-2``, this project's own format (``docs/archive-format.md``).

Root ``manifest.json`` (validated by ``schemas/manifest.schema.json``) is the source of truth; it
indexes every member with size + sha256 and every canonical tensor with dtype, shape and sha256.
``params.json`` holds the parameter snapshot; arrays (the probe) live in the primary model's
``weights.h5`` under ``/params/``. Checksums are verified by :func:`verify_checksums`
(``validate`` runs it; plain reads skip it for speed).

Reads are in place: ``weights.h5`` is stored uncompressed in the zip, so tensors are views of one
read of the member's bytes at their file offset (:func:`read_member_buffer`). When the manifest
records every tensor's ``offset`` (the safetensors-style index) the views are taken straight from it
(:func:`tensors_at_offsets`): no HDF5 parsing and no CRC-32 — bridge-2 integrity is the sha256 index,
which ``validate`` (and ``read_archive(verify=True)``) checks together with every ``offset``. Without
offsets, or for deflated members and in-memory containers, h5py parses the metadata of a CRC-checked
buffer (:func:`read_in_place`). Params arrays (the probe) are read through a window on the member
(:class:`MemberWindow`), so ``inspect`` reads HDF5 metadata and the probe, never the tensors.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np

from ptycho_bridge import schema
from ptycho_bridge.errors import (
    ArchiveError,
    ArchiveLimitError,
    ChecksumError,
    CorruptArchiveError,
    FormatError,
    SpecError,
    UnsafeArchiveError,
    UnsupportedError,
)
from ptycho_bridge.formats.base import EraReader, cached_json, read_json
from ptycho_bridge.formats.bridge2.params import decode_value
from ptycho_bridge.io.h5 import (
    check_dataset,
    get_dataset,
    open_h5,
    read_array,
    walk_datasets,
)
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import BridgeArchive, LazyTensors, ModelEntry, TensorInfo
from ptycho_bridge.spec.network import NetworkSpec, check_tensors

FORMAT = "ptycho-bridge"
FORMAT_VERSION = "2.0.0"
TENSOR_GROUP = "tensors"
PARAMS_GROUP = "params"
# the manifest schema's tensor dtypes ($defs/tensor); the offset fast path reads only these
TENSOR_DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
                           "complex64", "complex128"})


def tensor_sha256(array: np.ndarray) -> str:
    """sha256 of a tensor's C-order little-endian bytes (the manifest's tensor checksum)."""
    import hashlib

    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def check_format_version(version: str, *, member: str) -> None:
    major = int(version.split(".")[0])
    supported = int(FORMAT_VERSION.split(".")[0])
    if major > supported:
        raise UnsupportedError(
            f"format_version {version} is newer than this reader supports ({FORMAT_VERSION}); upgrade ptycho-bridge",
            member=member,
            field="format_version",
        )
    if major < supported:
        raise UnsupportedError(f"format_version {version} predates bridge-2", member=member, field="format_version")


class BridgeReader(EraReader):
    era = "bridge-2"
    can_write = True
    has_checksums = True
    backend = "neutral"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        if "manifest.json" not in zf:
            return False
        m = cached_json(zf, "manifest.json", hints)
        return isinstance(m, dict) and m.get("format") == FORMAT

    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        where = zf.member_label("manifest.json")
        manifest = cached_json(zf, "manifest.json", hints)
        if isinstance(manifest, dict) and isinstance(manifest.get("format_version"), str):
            try:
                check_format_version(manifest["format_version"], member=where)
            except ValueError:
                pass  # the schema names the bad pattern
        schema.validate("manifest", manifest, member=where)
        listed = set(manifest["members"])
        present = set(zf.names()) - {"manifest.json"}
        if present - listed:
            raise FormatError(f"members not listed in manifest.json: {sorted(present - listed)}", member=where, field="members")
        if listed - present:
            raise FormatError(f"members listed in manifest.json but absent: {sorted(listed - present)}", member=where, field="members")

        weights_cache: dict[str, np.ndarray] = {}

        def weights_buffer(member: str, check_crc: bool = True) -> np.ndarray:
            # tensors load lazily, after read() returned and the container was closed: reopen by path
            if member not in weights_cache:
                if member not in zf:
                    raise FormatError("weights member listed in manifest.json is absent", member=zf.member_label(member))
                if zf.closed and zf.path is not None:
                    with SafeZip(zf.path, label=zf.label, limits=zf.limits) as again:
                        weights_cache[member] = read_member_buffer(again, member, check_crc=check_crc)
                else:
                    weights_cache[member] = read_member_buffer(zf, member, check_crc=check_crc)
            return weights_cache[member]

        models: dict[str, ModelEntry] = {}
        for name, entry in manifest["models"].items():
            mwhere = f"{where} models.{name}"
            if entry["payload"]["kind"] == "torch-sentinel":  # the schema allows nothing else in such an entry
                models[name] = ModelEntry(
                    name, None, {}, {}, payload=dict(entry["payload"]), warnings=list(entry.get("notes", [])), sentinel=True
                )
                continue
            try:
                spec = NetworkSpec.from_dict(entry["network"])
                spec.check()
            except SpecError as exc:
                raise SpecError(exc.reason, member=mwhere, field=exc.field) from None
            index = entry["tensors"]
            check_tensors(spec, {k: tuple(v["shape"]) for k, v in index.items()}, member=mwhere)
            infos = {
                k: TensorInfo(k, tuple(v["shape"]), v["dtype"], source_name=f"/{TENSOR_GROUP}/{k}", sha256=v["sha256"])
                for k, v in index.items()
            }
            offsets = {k: v["offset"] for k, v in index.items() if "offset" in v}
            weights = entry["weights"]
            in_place = (len(offsets) == len(index) and zf.path is not None and weights in zf
                        and zf.info(weights).stored)
            models[name] = ModelEntry(
                name,
                spec,
                LazyTensors(infos, _tensor_loader(zf, weights, infos, weights_buffer, offsets if in_place else None)),
                infos,
                payload=dict(entry["payload"], weights=entry["weights"]),
                warnings=list(entry.get("notes", [])),
            )
        params: dict[str, Any] = {}
        torch_config = None
        if "params.json" in zf:
            pwhere = zf.member_label("params.json")
            doc = read_json(zf, "params.json")
            schema.validate("params", doc, member=pwhere)

            def load_array(ref: dict[str, Any]) -> np.ndarray:
                # params arrays (the probe) are read through a window on the member: inspect then reads
                # the HDF5 metadata and the probe bytes only, not every tensor. The member's CRC is
                # checked when the tensors load (the whole member is read then); validate checks sha256.
                label = zf.member_label(ref["member"])
                if ref["member"] not in zf:
                    raise FormatError("weights member named in params.json is absent", member=label)
                cached = weights_cache.get(ref["member"])
                store = BufferFile(cached) if cached is not None else MemberWindow.open(zf, ref["member"])
                if store is None:
                    store = BufferFile(weights_buffer(ref["member"]))
                try:
                    f = open_h5(store, member=label)
                    try:
                        arr = read_in_place(store, get_dataset(f, ref["dataset"], member=label), member=label)
                    finally:
                        f.close()
                finally:
                    store.close()
                if list(arr.shape) != list(ref["shape"]) or str(arr.dtype) != ref["dtype"]:
                    raise FormatError(
                        f"{ref['dataset']} is {arr.dtype}{list(arr.shape)}, params.json says {ref['dtype']}{ref['shape']}",
                        member=pwhere,
                    )
                return arr

            params = decode_value(doc["params"], load_array=load_array)
            torch_config = decode_value(doc.get("torch_config"), load_array=load_array)
        return BridgeArchive(
            path=path,
            era=self.era,
            backend=manifest["backend"],
            params=params,
            models=models,
            intensity_scale=manifest["intensity_scale"],
            manifest=manifest,
            torch_config=torch_config,
            has_checksums=True,
            members={m.name: m.size for m in zf.iter_members()},
        )


def _tensor_loader(zf: SafeZip, member: str, infos: dict[str, TensorInfo], weights_buffer,  # type: ignore[no-untyped-def]
                   offsets: dict[str, int] | None = None):
    """The loader of one model's tensors: views at the manifest's offsets when given, else via h5py."""
    label = zf.member_label(member)

    def load() -> dict[str, np.ndarray]:
        if offsets is not None:  # stored member in a file, every tensor indexed with its offset
            return tensors_at_offsets(weights_buffer(member, check_crc=False), infos, offsets, member=label)
        store = BufferFile(weights_buffer(member))
        f = open_h5(store, member=label)
        try:
            out = {}
            group = _tensor_group(f, member=label) if infos else None
            for name, info in infos.items():
                dset = get_dataset(group, name, member=label)  # one link level per tensor, not two
                if tuple(dset.shape) != info.shape or str(dset.dtype) != info.dtype:
                    raise SpecError(
                        f"tensor {name!r} is {dset.dtype}{list(dset.shape)}, manifest says {info.dtype}{list(info.shape)}",
                        member=label,
                    )
                out[name] = read_in_place(store, dset, member=label)
            return out
        finally:
            f.close()

    return load


def _tensor_group(f, *, member: str):  # type: ignore[no-untyped-def]
    """``/tensors``, reached through a hard link (the same rule :func:`get_dataset` applies per level)."""
    import h5py

    try:  # a corrupt object header raises assorted h5py errors
        link = f.get(TENSOR_GROUP, getlink=True)
        if link is None:
            raise FormatError(f"HDF5 group /{TENSOR_GROUP} not found", member=member)
        if not isinstance(link, h5py.HardLink):
            raise UnsafeArchiveError(f"HDF5 {type(link).__name__} at /{TENSOR_GROUP} is not allowed", member=member)
        group = f[TENSOR_GROUP]
    except ArchiveError:
        raise
    except Exception as exc:
        raise CorruptArchiveError(f"cannot open HDF5 group /{TENSOR_GROUP} ({exc.__class__.__name__}: {exc})",
                                  member=member) from None
    if not isinstance(group, h5py.Group):
        raise FormatError(f"HDF5 object /{TENSOR_GROUP} is not a group", member=member)
    return group


# -- in-place reads of stored weights.h5 members ----------------------------------------------------
def tensors_at_offsets(buf: np.ndarray, infos: dict[str, TensorInfo], offsets: dict[str, int], *,
                       member: str) -> dict[str, np.ndarray]:
    """Every tensor as a view of the member buffer at its manifest ``offset`` (no HDF5, no copy).

    Why: parsing HDF5 costs 50-100 µs per tensor; the manifest already says dtype, shape and where the
    bytes are. Bounds hold whatever the manifest says: a byte range outside the member is refused
    naming the tensor, so a lying offset can never read past the member. A lying offset *inside* the
    member yields wrong values, which the sha256 index catches (``validate`` also cross-checks every
    offset against HDF5). Unaligned data is copied (numpy and torch want aligned arrays).
    """
    size = int(buf.size)
    out: dict[str, np.ndarray] = {}
    for name, info in infos.items():
        offset = offsets[name]
        if info.dtype not in TENSOR_DTYPES:  # the schema enforces this; kept so no other dtype is ever viewed
            raise FormatError(f"tensor {name!r} has dtype {info.dtype!r}, not a manifest tensor dtype", member=member)
        dtype = np.dtype(info.dtype).newbyteorder("<")  # bridge-2 tensors are little-endian
        count = 1
        for d in info.shape:
            count *= int(d)
        nbytes = count * dtype.itemsize
        if not isinstance(offset, int) or offset < 0 or offset + nbytes > size:
            raise CorruptArchiveError(
                f"tensor {name!r}: manifest.json offset {offset} + {nbytes} bytes lies outside the {size}-byte member",
                member=member,
            )
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(info.shape)
        out[name] = arr if arr.flags.aligned else arr.copy()
    return out


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


class MemberWindow(BufferFile):
    """A read-only file over a stored member's byte range in the zip on disk (nothing else is readable).

    Why: reading one small dataset (the probe) must not read the whole member. Reads are clipped to
    the member, so a lying HDF5 address can never reach another member's bytes.
    """

    def __init__(self, path: str, offset: int, size: int, *, label: str) -> None:
        io.RawIOBase.__init__(self)
        self.label = label
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._base = offset
        self._pos = 0
        self.size = size

    @classmethod
    def open(cls, zf: SafeZip, member: str) -> MemberWindow | None:
        offset = zf.data_offset(member)
        info = zf.info(member)
        if offset is None or zf.path is None or info.compressed_size != info.size:
            return None
        return cls(str(zf.path), offset, info.size, label=zf.member_label(member))

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        n = max(0, min(len(target), self.size - self._pos))
        if n == 0:
            return 0
        self._fh.seek(self._base + self._pos)
        got = self._fh.readinto(memoryview(target).cast("B")[:n]) or 0
        self._pos += got
        return got

    def span(self, offset: int, nbytes: int) -> np.ndarray:
        out = np.empty(nbytes, dtype=np.uint8)
        self.seek(offset)
        got = 0
        view = memoryview(out)
        while got < nbytes:
            n = self.readinto(view[got:])
            if not n:
                raise CorruptArchiveError(f"member truncated at byte {offset + got}", member=self.label)
            got += n
        return out

    def close(self) -> None:
        self._fh.close()
        io.RawIOBase.close(self)


def read_in_place(store: BufferFile, dset, *, member: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A checked dataset read straight from the HDF5 image when contiguous and unfiltered, else via h5py.

    From a :class:`BufferFile` the array is a view of the member buffer (no copy); from a
    :class:`MemberWindow` it is one read at the dataset's offset. Bounds: the dataset's byte range
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


def verify_checksums(zf: SafeZip, manifest: dict[str, Any]) -> list[str]:
    """Every member's size + sha256 and every tensor's ``offset`` and sha256; returns what was checked,
    raises on the first mismatch (naming the member and tensor)."""
    import hashlib

    checked = []
    weights_members = {entry["weights"] for entry in manifest["models"].values() if "weights" in entry}
    weights_data: dict[str, bytes] = {}  # kept from the sha256 pass, parsed below without a second read
    for name, meta in manifest["members"].items():
        data = zf.read(name)
        if len(data) != meta["size"]:
            raise ChecksumError(f"size {len(data)} bytes, manifest says {meta['size']}", member=zf.member_label(name))
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta["sha256"]:
            raise ChecksumError(f"sha256 {digest[:16]}…, manifest says {meta['sha256'][:16]}…", member=zf.member_label(name))
        checked.append(name)
        if name in weights_members:
            weights_data[name] = data
    for model, entry in manifest["models"].items():
        if "weights" not in entry:  # a torch-sentinel placeholder: its member is covered above
            continue
        label = zf.member_label(entry["weights"])
        data = weights_data.get(entry["weights"])
        f = open_h5(zf.read(entry["weights"]) if data is None else data, member=label)
        try:
            names = {p.split("/", 2)[2] for p, _ in walk_datasets(f, member=label) if p.startswith(f"/{TENSOR_GROUP}/")}
            extra = names - set(entry["tensors"])
            if extra:
                raise FormatError(f"tensors not indexed in manifest.json: {sorted(extra)}", member=label)
            for tname, meta in entry["tensors"].items():
                dset = get_dataset(f, f"/{TENSOR_GROUP}/{tname}", member=label)
                if "offset" in meta:
                    try:
                        actual = dset.id.get_offset() if dset.chunks is None and not dset.compression else None
                    except Exception as exc:
                        raise CorruptArchiveError(f"tensor {tname!r}: cannot read HDF5 data offset ({exc})",
                                                  member=label) from None
                    if actual != meta["offset"]:
                        raise ChecksumError(f"tensor {tname!r} offset {meta['offset']} in manifest.json, HDF5 data "
                                            f"offset is {actual}", member=label)
                arr = read_array(dset, member=label)
                if tensor_sha256(arr) != meta["sha256"]:
                    raise ChecksumError(f"tensor {tname!r} sha256 does not match manifest.json", member=label)
                checked.append(f"{model}:{tname}")
        finally:
            f.close()
    return checked
