"""Reader for ``bridge-2``, this project's own format (``docs/archive-format.md``).

Root ``manifest.json`` (validated by ``schemas/manifest.schema.json``) is the source of truth; it
indexes every member with size + sha256 and every canonical tensor with dtype, shape and sha256.
``params.json`` holds the parameter snapshot; arrays (the probe) live in the primary model's
``weights.h5`` under ``/params/``. ``validate`` runs :func:`verify_checksums` (every member, every
tensor, offsets against HDF5); a plain read verifies what it consumes (``verify=True``, the default):
the whole ``weights.h5`` member's sha256 once when it is read, and each tensor view's sha256, so the
bytes a command uses are the bytes that were sealed (``docs/security.md``). ``verify=False`` is
``inspect`` (no tensor bytes) and ``--no-verify``.

Reads are in place: ``weights.h5`` is stored uncompressed in the zip, so tensors are views of one
read of the member's bytes at their file offset (:func:`read_member_buffer`). When the manifest
records every tensor's ``offset`` (the safetensors-style index) the views are taken straight from it
(:func:`tensors_at_offsets`): no HDF5 parsing and no CRC-32 — bridge-2 integrity is the sha256 index.
Without offsets, or for deflated members and in-memory containers, h5py parses the metadata of a
CRC-checked buffer (:func:`read_in_place`). Params arrays (the probe) are read from the same member
buffer at the offset the pure HDF5 metadata scan finds (:func:`dataset_from_scan`; libhdf5 when it
does not answer); ``inspect`` reads neither (``lazy_arrays``: the probe is reported from
``params.json``). Every libhdf5 call on archive bytes runs in a forked child
(:mod:`ptycho_bridge.io.h5_isolated`), and only native-order, contiguous, unfiltered datasets are
read (:func:`check_native_layout`): what the offset path and h5py read is the same bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge import schema
from ptycho_bridge.errors import (
    ArchiveError,
    ChecksumError,
    CorruptArchiveError,
    FormatError,
    SpecError,
    UnsafeArchiveError,
)
from ptycho_bridge.formats.base import MAX_JSON_BYTES, EraReader, cached_json, read_json, require_float
from ptycho_bridge.formats.bridge2.layout import (
    FORMAT,
    TENSOR_DTYPES,
    TENSOR_GROUP,
    check_format_version,
    tensor_sha256,
)
from ptycho_bridge.formats.bridge2.params import decode_value
from ptycho_bridge.formats.bridge2.verify import check_member_sha256, check_native_layout
from ptycho_bridge.io.buffers import (
    BufferFile,
    dataset_from_scan,
    read_in_place,
    read_member_buffer,
)
from ptycho_bridge.io.h5 import (
    get_dataset,
    open_h5,
)
from ptycho_bridge.io.deferred import DeferredArray
from ptycho_bridge.io.h5_isolated import run_isolated
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import BridgeArchive, LazyTensors, ModelEntry, TensorInfo
from ptycho_bridge.spec.network import NetworkSpec, check_tensors


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
        verify = self.verify

        def weights_buffer(member: str, check_crc: bool = True) -> np.ndarray:
            # tensors load lazily, after read() returned and the container was closed: reopen by path
            if member not in weights_cache:
                if member not in zf:
                    raise FormatError("weights member listed in manifest.json is absent", member=zf.member_label(member))
                if zf.closed and zf.path is not None:
                    with SafeZip(zf.path, label=zf.label, limits=zf.limits) as again:
                        buf = read_member_buffer(again, member, check_crc=check_crc and not verify)
                else:
                    buf = read_member_buffer(zf, member, check_crc=check_crc and not verify)
                if verify:  # one sha256 of the whole member replaces its CRC-32: what is consumed was sealed
                    check_member_sha256(member, memoryview(buf), manifest, label=zf.member_label(member))
                weights_cache[member] = buf
            return weights_cache[member]

        models: dict[str, ModelEntry] = {}
        in_place_members: set[str] = set()  # weights members whose tensors are read at manifest offsets
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
            if in_place:
                in_place_members.add(weights)
            models[name] = ModelEntry(
                name,
                spec,
                LazyTensors(infos, _tensor_loader(zf, weights, infos, weights_buffer, offsets if in_place else None,
                                                  verify=verify)),
                infos,
                payload=dict(entry["payload"], weights=entry["weights"]),
                warnings=list(entry.get("notes", [])),
                reassembly_centring=entry.get("reassembly_centring", True),
            )
        params: dict[str, Any] = {}
        torch_config = None
        if "params.json" in zf:
            pwhere = zf.member_label("params.json")
            if verify:
                check_member_sha256("params.json", zf.read("params.json", max_size=MAX_JSON_BYTES), manifest,
                                    label=pwhere)
            doc = read_json(zf, "params.json")
            schema.validate("params", doc, member=pwhere)

            def load_array(ref: dict[str, Any]) -> np.ndarray:
                # params arrays (the probe) come from the member buffer the tensors are read from: a verifying
                # read hashes the whole member first (sha256), an in-place member skips the CRC as its tensors
                # do, any other member is CRC-checked. The pure metadata scan locates the dataset; libhdf5 (in
                # a forked child) reads it only when the scan does not answer (io.buffers.dataset_from_scan).
                label = zf.member_label(ref["member"])
                if ref["member"] not in zf:
                    raise FormatError("weights member named in params.json is absent", member=label)
                buf = weights_buffer(ref["member"], check_crc=ref["member"] not in in_place_members)
                arr = dataset_from_scan(buf, ref["dataset"], ref["shape"], ref["dtype"])
                if arr is None:
                    store = BufferFile(buf)
                    try:
                        arr = run_isolated(_read_params_array, store, ref["dataset"], label, list(ref["shape"]),
                                           pwhere, member=label)
                    finally:
                        store.close()
                if list(arr.shape) != list(ref["shape"]) or str(arr.dtype) != ref["dtype"]:
                    raise FormatError(
                        f"{ref['dataset']} is {arr.dtype}{list(arr.shape)}, params.json says {ref['dtype']}{ref['shape']}",
                        member=pwhere,
                    )
                return arr

            def array_ref(ref: dict[str, Any]) -> Any:
                # lazy_arrays (inspect): the schema-checked shape and dtype now, the HDF5 read if ever used
                if self.lazy_arrays:
                    return DeferredArray(tuple(ref["shape"]), ref["dtype"], lambda: load_array(ref))
                return load_array(ref)

            params = decode_value(doc["params"], load_array=array_ref)
            torch_config = decode_value(doc.get("torch_config"), load_array=array_ref)
            if "intensity_scale" in params:
                require_float(params["intensity_scale"], member=pwhere, field="intensity_scale", positive=True)
        if manifest["intensity_scale"] is not None:
            require_float(manifest["intensity_scale"], member=where, field="intensity_scale", positive=True)
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
                   offsets: dict[str, int] | None = None, *, verify: bool = True):
    """The loader of one model's tensors: views at the manifest's offsets when given, else via h5py
    (in a forked child); with ``verify`` every tensor's bytes are hashed against the manifest."""
    label = zf.member_label(member)

    def load() -> dict[str, np.ndarray]:
        if offsets is not None:  # stored member in a file, every tensor indexed with its offset
            return tensors_at_offsets(weights_buffer(member, check_crc=False), infos, offsets, member=label,
                                      verify=verify)
        store = BufferFile(weights_buffer(member))
        try:
            out = run_isolated(_read_tensors, store, {k: [list(i.shape), i.dtype] for k, i in infos.items()}, label,
                               member=label)
        finally:
            store.close()
        if verify:
            for name, info in infos.items():
                if tensor_sha256(out[name]) != info.sha256:
                    raise ChecksumError(f"tensor {name!r} sha256 does not match manifest.json", member=label)
        return out

    return load


# -- libhdf5 work, run in a forked child by io.h5_isolated (plain arrays back) --------------------------
def _read_tensors(store: BufferFile, index: dict[str, list[Any]], label: str) -> dict[str, np.ndarray]:
    f = open_h5(store, member=label)
    try:
        out = {}
        group = _tensor_group(f, member=label) if index else None
        for name, (shape, dtype) in index.items():
            dset = get_dataset(group, name, member=label)  # one link level per tensor, not two
            check_native_layout(dset, member=label)
            if tuple(dset.shape) != tuple(shape) or str(dset.dtype) != dtype:
                raise SpecError(f"tensor {name!r} is {dset.dtype}{list(dset.shape)}, manifest says {dtype}{list(shape)}",
                                member=label)
            out[name] = read_in_place(store, dset, member=label)
        return out
    finally:
        f.close()


def _read_params_array(store: BufferFile, dataset: str, label: str, shape: list[int], pwhere: str) -> np.ndarray:
    """One ``/params`` array; its declared shape is compared with ``params.json`` before a byte is read."""
    f = open_h5(store, member=label)
    try:
        dset = get_dataset(f, dataset, member=label)
        if list(dset.shape) != shape:
            raise FormatError(f"{dataset} has shape {list(dset.shape)}, params.json says {shape}", member=pwhere)
        check_native_layout(dset, member=label)
        return read_in_place(store, dset, member=label)
    finally:
        f.close()


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
                       member: str, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor as a view of the member buffer at its manifest ``offset`` (no HDF5, no copy).

    Why: parsing HDF5 costs 50-100 µs per tensor; the manifest already says dtype, shape and where the
    bytes are. Bounds hold whatever the manifest says: a byte range outside the member is refused
    naming the tensor, so a lying offset can never read past the member. A lying offset *inside* the
    member yields wrong values, which the sha256 index catches: with ``verify`` (the default) the bytes
    of every view are hashed and compared with the tensor's manifest sha256 -- the checksum covers
    C-order little-endian bytes, exactly what the view reads, so a tensor stored big-endian or an
    offset pointing at other bytes is refused here as in ``validate``. Unaligned data is copied.
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
        if verify and hashlib.sha256(memoryview(buf)[offset:offset + nbytes]).hexdigest() != info.sha256:
            raise ChecksumError(f"tensor {name!r} sha256 does not match manifest.json (bytes at offset {offset})",
                                member=member)
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(info.shape)
        out[name] = arr if arr.flags.aligned else arr.copy()
    return out
