"""Verify a bridge-2 archive against its manifest: every member's size and sha256, every tensor's offset and sha256.

Why: the sha256 index is bridge-2's integrity guarantee; ``validate`` and ``read_archive(verify=True)``
run this check, separate from the fast reader so the two cannot drift silently.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ptycho_bridge.errors import ChecksumError, CorruptArchiveError, FormatError
from ptycho_bridge.formats.bridge2.layout import TENSOR_GROUP, tensor_sha256
from ptycho_bridge.io.h5 import get_dataset, open_h5, read_array, walk_datasets
from ptycho_bridge.io.safezip import SafeZip


def verify_checksums(zf: SafeZip, manifest: dict[str, Any]) -> list[str]:
    """Every member's size + sha256 and every tensor's ``offset`` and sha256; returns what was checked,
    raises on the first mismatch (naming the member and tensor)."""
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
