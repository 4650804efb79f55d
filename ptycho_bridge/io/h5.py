"""Safe HDF5 access for in-memory weight files (``model.weights.h5``, ``weights.h5``).

Why: HDF5 can point outside itself (external links, external raw storage, virtual datasets) and a
truncated file can crash naive readers. We open HDF5 images from bytes (never from an extracted
path), refuse every link that is not a hard link, refuse external/virtual storage and non-numeric
dtypes, and translate h5py's many exception types into :class:`ArchiveError` subclasses.
"""

from __future__ import annotations

import io
from typing import Iterator

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveLimitError, CorruptArchiveError, FormatError, UnsafeArchiveError

ALLOWED_KINDS = "biufc"  # bool, int, uint, float, complex
MAX_DATASET_BYTES = 2 * 1024**3  # one dataset, as one zip member (safezip.Limits.max_member_size)
MAX_FILTER_RATIO = 1100  # deflate cannot exceed ~1032:1; a larger declared/stored ratio is unbacked data


def _sizeof_lengths(image: bytes | memoryview) -> int:
    """"Size of Lengths" from a superblock at offset 0 (versions 0-3); 8, HDF5's default, otherwise."""
    if bytes(image[:8]) != b"\x89HDF\r\n\x1a\n" or len(image) < 16:
        return 8
    size = image[14] if image[8] in (0, 1) else image[10]
    return size if size in (2, 4, 8, 16) else 8


def check_global_heaps(image: bytes | memoryview, *, member: str) -> int:
    """Walk every global heap collection (``GCOL``) as libhdf5 does and refuse malformed ones.

    Why: variable-length strings (Keras stores each layer ``name`` attribute as one) live in global
    heap collections, and libhdf5 loops forever on a collection whose free-space object has size 0
    (scripts/fuzz.py found this: one mutated byte, 100% CPU, uninterruptible). Heap objects must
    tile their collection exactly. Returns the number of collections checked.

    Linear time: every ``GCOL`` signature is a candidate (we do not know which ones libhdf5 will
    read), and a hostile image can nest candidates so that each walk covers the rest of the file
    (128 KB once took 5.5 s). Real collections never overlap, so the object steps of all walks
    together stay below one per 8 bytes of image; more than that is refused as overlapping
    collections instead of walked.
    """
    raw = bytes(image)
    length_size = _sizeof_lengths(raw)
    header = 8 + length_size  # signature, version, 3 reserved, collection size
    obj_header = 8 + length_size  # index, refcount, 4 reserved, object size
    checked = 0
    budget = len(raw) // 8 + 1024  # object steps over all walks (see above)
    pos = raw.find(b"GCOL")
    while pos != -1:
        if pos + header <= len(raw) and raw[pos + 4] == 1:
            size = int.from_bytes(raw[pos + 8:pos + 8 + length_size], "little")
            end = pos + size
            if size >= header and end <= len(raw):  # a collection past EOF makes libhdf5 fail, not hang
                p = pos + header
                while p < end:
                    budget -= 1
                    if budget < 0:
                        raise CorruptArchiveError(f"HDF5 global heap at byte {pos}: global heap collections "
                                                  "overlap (more heap objects than the image can hold)",
                                                  member=member)
                    if p + obj_header > end:  # too small for an object: trailing free space
                        p = end
                        break
                    index = int.from_bytes(raw[p:p + 2], "little")
                    osize = int.from_bytes(raw[p + 8:p + 8 + length_size], "little")
                    if index == 0:
                        if osize == 0:
                            raise CorruptArchiveError(f"HDF5 global heap at byte {pos}: free-space object of size 0 "
                                                      "(libhdf5 would loop forever)", member=member)
                        p += osize
                    else:
                        p += obj_header + (-(-osize // 8)) * 8
                if p != end:
                    raise CorruptArchiveError(f"HDF5 global heap at byte {pos}: objects overrun the collection "
                                              f"({p - pos} of {size} bytes)", member=member)
                checked += 1
        pos = raw.find(b"GCOL", pos + 4)
    return checked


def open_h5(data: bytes | io.BufferedIOBase, *, member: str, checked: bool = False):  # -> h5py.File
    """Open an HDF5 image held in memory (or a file object) read-only.

    Images given as bytes have their global heaps checked first (:func:`check_global_heaps`) unless
    ``checked`` says this very image already passed that check; file objects are the bridge-2
    in-place path, which reads numeric datasets only (no heap access).
    """
    import h5py

    if not checked and isinstance(data, (bytes, bytearray, memoryview)):
        check_global_heaps(data, member=member)

    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        return h5py.File(fileobj, "r")
    except Exception as exc:  # h5py raises OSError/ValueError/KeyError variants
        raise CorruptArchiveError(f"not a readable HDF5 file ({exc.__class__.__name__}: {exc})", member=member) from None


def check_link(group, name: str, *, member: str,  # type: ignore[no-untyped-def]
               max_len: int | None = None) -> None:
    """Refuse a soft or external link ``group[name]`` by its path, without following it.

    ``max_len``: cut the message of an unreadable link to that many characters (the scan reader's bound; archive
    readers keep the whole message)."""
    import h5py

    try:
        link = group.get(name, getlink=True)
    except Exception as exc:  # corrupt link messages: KeyError/OSError/UnicodeDecodeError variants
        raise CorruptArchiveError(f"cannot read HDF5 link {name!r} ({exc.__class__.__name__}: {exc})"[:max_len],
                                  member=member) from None
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
            check_link(node, part, member=member)
            node = node[part]
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise CorruptArchiveError(f"cannot read HDF5 object {path!r} ({exc})", member=member) from None
    if not isinstance(node, h5py.Dataset):
        raise FormatError(f"HDF5 object {path!r} is not a dataset", member=member)
    check_dataset(node, member=member)
    return node


def check_dataset(dset, *, member: str, numeric: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Refuse virtual datasets, external raw storage and non-numeric dtypes (corrupt headers: CorruptArchiveError).

    ``numeric=False`` leaves the dtype to the caller (one that lists a non-numeric dataset instead of refusing it;
    :func:`non_numeric_reason` is the refusal's text)."""
    try:
        virtual, external, dtype = dset.is_virtual, dset.external, dset.dtype
    except Exception as exc:  # a corrupt layout/type message: h5py raises ValueError/OSError/TypeError variants
        raise CorruptArchiveError(f"cannot read HDF5 dataset header {dset.name} ({exc.__class__.__name__}: {exc})",
                                  member=member) from None
    if virtual:
        raise UnsafeArchiveError(f"HDF5 virtual dataset {dset.name} is not allowed", member=member)
    if external:
        raise UnsafeArchiveError(f"HDF5 dataset {dset.name} uses external storage", member=member)
    if numeric and dtype.kind not in ALLOWED_KINDS:
        raise FormatError(non_numeric_reason(dset), member=member)


def non_numeric_reason(dset) -> str:  # type: ignore[no-untyped-def]
    """Why a dataset whose dtype kind is outside :data:`ALLOWED_KINDS` is refused."""
    return f"HDF5 dataset {dset.name} has non-numeric dtype {dset.dtype}"


def check_dataset_size(dset, *, member: str) -> int:  # type: ignore[no-untyped-def]
    """Bound a dataset before reading it; return its declared size in bytes.

    Why: the declared shape is attacker-controlled and libhdf5 fills unwritten chunks with the fill
    value, so a tiny file can declare a 17678² probe that reads as 2.5 GB. The declared
    ``shape × itemsize`` must stay under :data:`MAX_DATASET_BYTES` and be backed by the bytes actually
    stored: all of them for unfiltered data, 1 stored byte per :data:`MAX_FILTER_RATIO` for filtered.
    """
    try:
        shape = tuple(int(d) for d in dset.shape)
        itemsize = int(dset.dtype.itemsize)
        stored = int(dset.id.get_storage_size())
        filtered = dset.id.get_create_plist().get_nfilters() > 0
    except Exception as exc:  # corrupt layout messages: assorted h5py errors
        raise CorruptArchiveError(f"cannot read HDF5 dataset layout {dset.name} ({exc.__class__.__name__}: {exc})",
                                  member=member) from None
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    if nbytes > MAX_DATASET_BYTES:
        raise ArchiveLimitError(f"HDF5 dataset {dset.name} declares {nbytes} bytes (shape {shape}), "
                                f"limit is {MAX_DATASET_BYTES}", member=member)
    backed = stored * MAX_FILTER_RATIO if filtered else stored
    if nbytes > backed:
        raise CorruptArchiveError(f"HDF5 dataset {dset.name} declares {nbytes} bytes (shape {shape}) but stores "
                                  f"{stored}{' (filtered)' if filtered else ''}: unwritten or missing data",
                                  member=member)
    return nbytes


def read_array(dset, *, member: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Read a checked, size-bounded dataset fully, mapping HDF5 I/O failures (truncation) to CorruptArchiveError."""
    check_dataset(dset, member=member)
    check_dataset_size(dset, member=member)
    try:
        return np.asarray(dset[()])
    except Exception as exc:
        raise CorruptArchiveError(f"cannot read HDF5 dataset {dset.name} ({exc})", member=member) from None


def get_attr(node, name: str, *, member: str):  # type: ignore[no-untyped-def]
    """``node.attrs.get(name)``, with HDF5 decode failures (corrupt or exotic attribute types) as CorruptArchiveError."""
    try:
        return node.attrs.get(name)
    except Exception as exc:  # h5py raises OSError/ValueError/TypeError/KeyError variants
        raise CorruptArchiveError(f"cannot read HDF5 attribute {name!r} of {node.name} ({exc.__class__.__name__}: {exc})",
                                  member=member) from None


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
            check_link(group, name, member=member)
            try:
                node = group[name]
            except Exception as exc:
                raise CorruptArchiveError(f"cannot open HDF5 object {group.name}/{name} ({exc})", member=member) from None
            if isinstance(node, h5py.Group):
                stack.append(node)
            elif isinstance(node, h5py.Dataset):
                check_dataset(node, member=member)
                yield node.name, node
