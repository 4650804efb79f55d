"""Verify a bridge-2 archive against its manifest: every member's size and sha256, every tensor's offset and sha256.

Why: the sha256 index is bridge-2's integrity guarantee; ``validate`` runs this full check (the fast
reader verifies only what it consumes, with :func:`check_member_sha256` and per-tensor hashes). Both
refuse the same layouts (:func:`check_native_layout`), so they cannot read different values.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

from ptycho_bridge.errors import ChecksumError, CorruptArchiveError, FormatError
from ptycho_bridge.formats.base import read_json
from ptycho_bridge.formats.bridge2.layout import PARAMS_GROUP, TENSOR_GROUP, tensor_sha256
from ptycho_bridge.io.h5 import get_dataset, open_h5, read_array, walk_datasets
from ptycho_bridge.io.h5_isolated import run_isolated
from ptycho_bridge.io.h5meta import scan
from ptycho_bridge.io.safezip import SafeZip


def verify_checksums(zf: SafeZip, manifest: dict[str, Any]) -> list[str]:
    """Every member's size + sha256 and every tensor's ``offset`` and sha256; returns what was checked,
    raises on the first mismatch (naming the member and tensor)."""
    checked = []
    weights_members = {entry["weights"] for entry in manifest["models"].values() if "weights" in entry}
    weights_data: dict[str, bytes] = {}  # kept from the sha256 pass, parsed below without a second read
    params_raw: bytes | None = None  # likewise
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
        if name == "params.json":
            params_raw = data
    declared = params_datasets(zf, params_raw) if params_raw is not None else {}
    for model, entry in manifest["models"].items():
        if "weights" not in entry:  # a torch-sentinel placeholder: its member is covered above
            continue
        label = zf.member_label(entry["weights"])
        data = weights_data.get(entry["weights"])
        image = zf.read(entry["weights"]) if data is None else data
        # libhdf5 parses the image in a forked child (a crash or a loop becomes an error line)
        found = run_isolated(_tensor_facts, image, sorted(entry["tensors"]), label, member=label)
        check_scan_agrees(image, found["params"], label=label)
        extra = set(found["names"]) - set(entry["tensors"])
        if extra:
            raise FormatError(f"tensors not indexed in manifest.json: {sorted(extra)}", member=label)
        undeclared = sorted(set(found["all"]) - {f"/{TENSOR_GROUP}/{t}" for t in entry["tensors"]}
                            - declared.get(entry["weights"], set()))
        if undeclared:
            raise FormatError(f"datasets declared by neither manifest.json nor params.json: {undeclared[:8]}"
                              f"{' …' if len(undeclared) > 8 else ''} (every bridge-2 dataset carries a checksum or "
                              "is a params.json array)", member=label)
        for tname, meta in entry["tensors"].items():
            actual, digest = found["tensors"][tname]
            if "offset" in meta and actual != meta["offset"]:
                raise ChecksumError(f"tensor {tname!r} offset {meta['offset']} in manifest.json, HDF5 data "
                                    f"offset is {actual}", member=label)
            if digest != meta["sha256"]:
                raise ChecksumError(f"tensor {tname!r} sha256 does not match manifest.json", member=label)
            checked.append(f"{model}:{tname}")
    return checked


def params_datasets(zf: SafeZip, raw: bytes | None = None) -> dict[str, set[str]]:
    """weights member -> the HDF5 datasets ``params.json`` references (``{"$array": {member, dataset, ...}}``).

    Why: an HDF5 dataset nobody declares has no checksum and is read by no reader, yet the format promises a
    checksum for every array it carries; ``validate`` refuses it by name instead of passing bytes it cannot vouch
    for (``migrate``/``convert`` rebuild ``weights.h5`` from the declared tensors, so they never carry it over).
    ``raw``: the bytes of ``params.json`` when the caller has read them (the sha256 pass), else it is read here."""
    out: dict[str, set[str]] = {}
    try:
        doc = read_json(zf, "params.json", raw=raw)
    except FormatError:
        return out  # the member checksum above already vouched for it; the reader reports a parse error itself
    stack: list[Any] = [doc]
    steps = 0
    while stack and steps < 1_000_000:  # bounded walk (params.json is at most 32 MiB)
        steps += 1
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$array")
            if isinstance(ref, dict) and isinstance(ref.get("member"), str) and isinstance(ref.get("dataset"), str):
                out.setdefault(ref["member"], set()).add("/" + ref["dataset"].lstrip("/"))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def check_scan_agrees(image: bytes, libhdf5: dict[str, list[Any]], *, label: str) -> None:
    """The pure metadata scan and libhdf5 must agree on every ``/params`` dataset the scan answers for.

    Why: readers take params arrays (the probe) at the offset the scan finds (``io.buffers.dataset_from_scan``)
    and fall back to libhdf5 only when it does not answer; ``validate`` checks here that both parsers see the
    same shape, dtype and data offset, so no archive can show one probe to the fast path and another to h5py."""
    meta = scan(image, within=f"/{PARAMS_GROUP}")  # the scan readers make (io.buffers.dataset_from_scan)
    if meta is None:
        return  # readers use libhdf5 for this member: nothing to compare
    for path, (offset, shape, dtype) in libhdf5.items():
        mine = meta.datasets.get(path)
        where = meta.storage.get(path) if mine is not None else None
        if mine is None or [list(mine[0]), mine[1]] != [shape, dtype] or (None if where is None else where[0]) != offset:
            raise FormatError(f"HDF5 parsers disagree on {path}: metadata scan {mine} at "
                              f"{None if where is None else where[0]}, libhdf5 {dtype}{shape} at {offset}", member=label)


def check_member_sha256(name: str, data: bytes | memoryview, manifest: dict[str, Any], *, label: str) -> None:
    """One member's bytes against its manifest size and sha256 (what a verifying read consumes)."""
    meta = manifest["members"].get(name)
    if meta is None:
        raise FormatError("member not listed in manifest.json", member=label)
    if len(data) != meta["size"]:
        raise ChecksumError(f"size {len(data)} bytes, manifest says {meta['size']}", member=label)
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise ChecksumError(f"sha256 {digest[:16]}…, manifest says {meta['sha256'][:16]}… (pass --no-verify to "
                            "read it anyway)", member=label)


def check_native_layout(dset, *, member: str) -> None:  # type: ignore[no-untyped-def]
    """Refuse what the bridge-2 writer never produces: big-endian, chunked or filtered datasets.

    Why: the offset fast path reads a tensor's raw bytes as contiguous little-endian data; h5py would
    byte-swap or de-chunk the same dataset. Refusing both here keeps ``validate`` and every other
    command reading the same values (and keeps libhdf5 away from chunk B-trees).
    """
    try:
        order, chunks = dset.dtype.byteorder, dset.chunks
        filtered = bool(dset.compression or dset.shuffle or dset.fletcher32 or dset.scaleoffset)
    except Exception as exc:
        raise CorruptArchiveError(f"cannot read HDF5 dataset layout {dset.name} ({exc.__class__.__name__}: {exc})",
                                  member=member) from None
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        raise FormatError(f"HDF5 dataset {dset.name} is stored big-endian; bridge-2 datasets are little-endian",
                          member=member)
    if chunks is not None or filtered:
        raise FormatError(f"HDF5 dataset {dset.name} is chunked or filtered; bridge-2 datasets are contiguous and "
                          "unfiltered", member=member)


def _tensor_facts(image: bytes, names: list[str], label: str) -> dict[str, Any]:
    """(run in the child) every /tensors dataset name; per indexed tensor its data offset and sha256."""
    f = open_h5(image, member=label)
    try:
        walked = list(walk_datasets(f, member=label))
        present = [p.split("/", 2)[2] for p, _ in walked if p.startswith(f"/{TENSOR_GROUP}/")]
        params: dict[str, list[Any]] = {}
        for path, dset in walked:
            if path.startswith(f"/{PARAMS_GROUP}/"):
                try:
                    offset = dset.id.get_offset()
                    params[path] = [None if offset is None else int(offset), [int(d) for d in dset.shape],
                                    str(dset.dtype)]
                except Exception as exc:
                    raise CorruptArchiveError(f"cannot read HDF5 dataset {path} ({exc.__class__.__name__})",
                                              member=label) from None
        tensors: dict[str, Any] = {}
        for tname in names:
            dset = get_dataset(f, f"/{TENSOR_GROUP}/{tname}", member=label)
            check_native_layout(dset, member=label)
            try:
                offset = dset.id.get_offset()
            except Exception as exc:
                raise CorruptArchiveError(f"tensor {tname!r}: cannot read HDF5 data offset ({exc})", member=label) from None
            tensors[tname] = [None if offset is None else int(offset), tensor_sha256(read_array(dset, member=label))]
        return {"names": present, "tensors": tensors, "params": params, "all": [p for p, _ in walked]}
    finally:
        f.close()
