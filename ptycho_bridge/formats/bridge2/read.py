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

from typing import Any

import numpy as np

from ptycho_bridge import schema
from ptycho_bridge.errors import (
    ArchiveError,
    CorruptArchiveError,
    FormatError,
    SpecError,
    UnsafeArchiveError,
)
from ptycho_bridge.formats.base import EraReader, cached_json, read_json, require_float
from ptycho_bridge.formats.bridge2.layout import (
    FORMAT,
    TENSOR_DTYPES,
    TENSOR_GROUP,
    check_format_version,
)
from ptycho_bridge.formats.bridge2.params import decode_value
from ptycho_bridge.io.buffers import (
    BufferFile,
    MemberWindow,
    read_in_place,
    read_member_buffer,
)
from ptycho_bridge.io.h5 import (
    get_dataset,
    open_h5,
)
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
                        dset = get_dataset(f, ref["dataset"], member=label)
                        if list(dset.shape) != list(ref["shape"]):  # compared before a byte is read
                            raise FormatError(f"{ref['dataset']} has shape {list(dset.shape)}, params.json says "
                                              f"{ref['shape']}", member=pwhere)
                        arr = read_in_place(store, dset, member=label)
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
