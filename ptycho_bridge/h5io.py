"""Safe HDF5 access for in-memory weight files (``model.weights.h5``, ``weights.h5``).

Why: HDF5 can point outside itself (external links, external raw storage, virtual datasets) and a
truncated file can crash naive readers. We open HDF5 images from bytes (never from an extracted
path), refuse every link that is not a hard link, refuse external/virtual storage and non-numeric
dtypes, and translate h5py's many exception types into :class:`ArchiveError` subclasses.
"""

from __future__ import annotations

import io
from typing import Iterator

import numpy as np

from .errors import CorruptArchiveError, FormatError, UnsafeArchiveError

ALLOWED_KINDS = "biufc"  # bool, int, uint, float, complex


def open_h5(data: bytes | io.BufferedIOBase, *, member: str):  # -> h5py.File
    """Open an HDF5 image held in memory (or a file object) read-only."""
    import h5py

    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        return h5py.File(fileobj, "r")
    except Exception as exc:  # h5py raises OSError/ValueError/KeyError variants
        raise CorruptArchiveError(f"not a readable HDF5 file ({exc.__class__.__name__}: {exc})", member=member) from None


def _check_link(group, name: str, member: str) -> None:  # type: ignore[no-untyped-def]
    import h5py

    link = group.get(name, getlink=True)
    if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
        kind = "external link" if isinstance(link, h5py.ExternalLink) else "soft link"
        raise UnsafeArchiveError(f"HDF5 {kind} at {group.name.rstrip('/')}/{name} is not allowed", member=member)


def get_dataset(h5file, path: str, *, member: str):  # type: ignore[no-untyped-def]
    """The dataset at ``path``, checking every link on the way is a hard link and storage is internal."""
    import h5py

    parts = [p for p in path.split("/") if p]
    node = h5file
    try:
        for part in parts:
            if part not in node:
                raise FormatError(f"HDF5 object {path!r} not found", member=member)
            _check_link(node, part, member)
            node = node[part]
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise CorruptArchiveError(f"cannot read HDF5 object {path!r} ({exc})", member=member) from None
    if not isinstance(node, h5py.Dataset):
        raise FormatError(f"HDF5 object {path!r} is not a dataset", member=member)
    check_dataset(node, member=member)
    return node


def check_dataset(dset, *, member: str) -> None:  # type: ignore[no-untyped-def]
    """Refuse virtual datasets, external raw storage and non-numeric dtypes."""
    if dset.is_virtual:
        raise UnsafeArchiveError(f"HDF5 virtual dataset {dset.name} is not allowed", member=member)
    if dset.external:
        raise UnsafeArchiveError(f"HDF5 dataset {dset.name} uses external storage", member=member)
    if dset.dtype.kind not in ALLOWED_KINDS:
        raise FormatError(f"HDF5 dataset {dset.name} has non-numeric dtype {dset.dtype}", member=member)


def read_array(dset, *, member: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Read a checked dataset fully, mapping HDF5 I/O failures (truncation) to CorruptArchiveError."""
    check_dataset(dset, member=member)
    try:
        return np.asarray(dset[()])
    except Exception as exc:
        raise CorruptArchiveError(f"cannot read HDF5 dataset {dset.name} ({exc})", member=member) from None


def walk_datasets(h5file, *, member: str) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """Every dataset below the root (hard links only), depth-first, as (path, dataset)."""
    import h5py

    stack = [h5file]
    while stack:
        group = stack.pop()
        try:
            names = list(group.keys())
        except Exception as exc:
            raise CorruptArchiveError(f"cannot list HDF5 group {group.name} ({exc})", member=member) from None
        for name in names:
            _check_link(group, name, member)
            try:
                node = group[name]
            except Exception as exc:
                raise CorruptArchiveError(f"cannot open HDF5 object {group.name}/{name} ({exc})", member=member) from None
            if isinstance(node, h5py.Group):
                stack.append(node)
            elif isinstance(node, h5py.Dataset):
                check_dataset(node, member=member)
                yield node.name, node
