"""HDF5 scans read as untrusted input: metadata from the pure-Python scan, libhdf5 only in the isolated child.

Why: a scan comes from a shared beamline folder or a collaborator as often as an archive does, and libhdf5 is C code
that crafted files crash (a chunk B-tree node whose child is itself: unbounded recursion, SIGSEGV). The archive
readers never run libhdf5 on untrusted bytes in the main process; this module gives scans the same guarantee:

1. :func:`describe` maps the file read-only and asks :func:`ptycho_bridge.io.h5meta.scan` (standard library, bounded)
   for every dataset's path, shape, dtype and contiguous data range. When it answers (the subset libhdf5 writes by
   default: contiguous or compact, no links but hard ones), no libhdf5 call is needed for contiguous data at all:
   the bytes sit at a known range of the file and are mapped like a stored ``.npz`` member.
2. Otherwise (chunked or filtered data, newer file formats, anything the scan does not understand) the same facts
   come from h5py in a forked child (:func:`ptycho_bridge.io.h5_isolated.run_isolated`: CPU, memory and wall-clock
   limits; a crash is one error). The child refuses, by dataset path and before reading any data, soft and
   external links, virtual datasets, external raw storage, filters outside
   :data:`ALLOWED_FILTERS` (a filter plugin is a shared library libhdf5 would load: plugin loading is switched
   off in the child too), and data not backed by stored bytes (a tiny file declaring a huge, never-written
   dataset that libhdf5 would fill in). A non-numeric dataset (a NeXus title string) is listed, never read, and
   refused only if the scan uses it as a key.
3. Pattern blocks of such datasets are read by libhdf5 in one long-lived child per dataset (:class:`BlockReader`), a
   small array the describing child did not preload in a child of its own (:func:`read_isolated`). Both re-check
   the dataset (the file may have changed) and return at most what was asked for.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any, Collection

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveLimitError, CorruptArchiveError, FormatError, UnsafeArchiveError
from ptycho_bridge.io.h5 import (ALLOWED_KINDS, MAX_FILTER_RATIO, check_dataset, check_link, get_dataset,
                                 non_numeric_reason)
from ptycho_bridge.io.h5_isolated import IsolatedWorker, run_isolated
from ptycho_bridge.io.h5meta import scan

# filter id -> name: what libhdf5 decodes with code built into h5py; anything else is refused by name
ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 6: "scaleoffset", 32000: "lzf"}
FILTER_NAMES = {4: "szip", 5: "nbit", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32015: "zstd",
                32017: "sz", 32013: "zfp", 307: "bzip2"}
MAX_OBJECTS = 4096  # datasets + groups a scan file may hold (a scan has a handful)
PRELOAD_BYTES = 1 << 20  # small datasets the describing child returns with the listing
PRELOAD_TOTAL = 16 << 20


@dataclass(frozen=True)
class H5Dataset:
    """One dataset of a scan file: shape, numpy dtype, and its contiguous raw data range when known."""

    shape: tuple[int, ...]
    dtype: np.dtype | None  # None: not numeric (refused if used as a key; ``refusal`` says why)
    storage: tuple[int, int] | None  # (file offset, nbytes) of contiguous, written data; None: read via libhdf5
    refusal: str | None = None
    preloaded: np.ndarray | None = None  # a small dataset the describing child read already (no second fork)


@dataclass(frozen=True)
class H5Facts:
    """What :func:`describe` found: every dataset (hard links only) and who answered."""

    datasets: dict[str, H5Dataset]
    source: str  # who answered, for the report's notes


def describe(path: str, *, not_preloaded: Collection[str] = ()) -> H5Facts:
    """Every dataset of the HDF5 file at ``path``; raises an ``ArchiveError`` naming the file for anything refused.

    ``not_preloaded``: dataset paths the describing child does not read however small (the patterns, which are read
    block by block through :class:`BlockReader`: transferred once)."""
    member = os.path.basename(path)
    meta = None
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                with memoryview(mm) as view:
                    meta = scan(view)
            finally:
                mm.close()
    if meta is not None:
        out: dict[str, H5Dataset] = {}
        for p, (shape, dtype) in meta.datasets.items():
            where = meta.storage.get(p)
            out[p] = H5Dataset(tuple(shape), np.dtype(dtype), where)
        return H5Facts(out, "the pure-Python metadata scan")
    skip = frozenset("/" + str(p).lstrip("/") for p in not_preloaded)
    found = run_isolated(_child_describe, path, member, skip, member=member)
    out = {}
    for p, (shape, dtype, why) in found["datasets"].items():
        arr = found["arrays"].get(p)
        dt = None if dtype is None else np.dtype(dtype)
        if not (isinstance(arr, np.ndarray) and dt is not None and arr.dtype == dt and arr.shape == tuple(shape)):
            arr = None  # not preloaded, or not what the listing says: read it again (and get its error) on use
        out[p] = H5Dataset(tuple(int(d) for d in shape), dt, None, why, arr)
    return H5Facts(out, "libhdf5 in an isolated child")


def read_contiguous(path: str, ds: H5Dataset, key: str) -> np.ndarray:
    """A small contiguous dataset copied from its byte range (checked again against the file's size)."""
    assert ds.storage is not None
    start, nbytes = ds.storage
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < start + nbytes:
            raise CorruptArchiveError("file shrank below the dataset's data range", field=key)
        fh.seek(start)
        buf = fh.read(nbytes)
    if len(buf) != nbytes:
        raise CorruptArchiveError("dataset data is truncated", field=key)
    return np.frombuffer(buf, dtype=ds.dtype).reshape(ds.shape).copy()


def read_isolated(path: str, dataset: str, selection: tuple[Any, ...], *, key: str) -> np.ndarray:
    """``dataset[selection]`` read by libhdf5 in a forked child of its own (a fork, an open and a check per call).

    Used for the small keys (coordinates, probe, objectGuess) the describing child did not preload, with
    ``("all",)``; pattern blocks go through :class:`BlockReader`. ``selection``: as :func:`_select` takes it."""
    member = os.path.basename(path)
    out = run_isolated(_child_read, path, dataset, selection, member, key, member=member)
    if not isinstance(out, np.ndarray):
        raise CorruptArchiveError("isolated HDF5 read returned no array", member=member, field=key)
    return out


# -- the child's side: h5py on the file, every check before any data read --------------------------------------
def _open(path: str, member: str):  # type: ignore[no-untyped-def]
    import h5py

    try:
        h5py.h5pl.set_loading_state(0)  # no filter plugin (a shared library) is ever loaded
    except Exception:  # pragma: no cover - h5py without the plugin interface: the allow-list still holds
        pass
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError/ValueError variants for corrupt files
        raise CorruptArchiveError(f"not a readable HDF5 file ({exc.__class__.__name__}: {exc})"[:400],
                                  member=member) from None


def check_storage(dset, *, member: str) -> None:  # type: ignore[no-untyped-def]
    """(child) Refuse filters outside the allow-list by name, and data not backed by stored bytes.

    Runs after :func:`ptycho_bridge.io.h5.check_dataset` (both callers), which refuses virtual datasets and external
    storage."""
    import h5py

    name = dset.name
    try:
        plist = dset.id.get_create_plist()
        layout = plist.get_layout()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        stored = int(dset.id.get_storage_size())
        shape = tuple(int(d) for d in dset.shape)
        itemsize = int(dset.dtype.itemsize)
    except Exception as exc:  # a corrupt layout or pipeline message
        raise CorruptArchiveError(f"cannot read HDF5 dataset layout {name} ({exc.__class__.__name__}: {exc})"[:400],
                                  member=member) from None
    for code in filters:
        if code not in ALLOWED_FILTERS:
            label = FILTER_NAMES.get(code, "unknown")
            raise UnsafeArchiveError(f"HDF5 dataset {name} uses filter {code} ({label}); allowed: "
                                     + ", ".join(ALLOWED_FILTERS.values()), member=member)
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    if nbytes == 0:
        return
    backed = stored * MAX_FILTER_RATIO if filters else stored
    if layout != h5py.h5d.COMPACT and nbytes > backed:
        raise CorruptArchiveError(f"HDF5 dataset {name} declares {nbytes} bytes (shape {shape}) but stores {stored}"
                                  f"{' (filtered)' if filters else ''}: unwritten or missing data", member=member)


def _child_describe(path: str, member: str, not_preloaded: frozenset[str] = frozenset()) -> dict[str, Any]:
    """(child) ``{"datasets": {path: [shape, dtype str or None, why not numeric]}, "arrays": {path: array}}``.

    Every dataset, walked by hard links only. Links, virtual datasets, external storage and filters are refused
    wherever they are; a non-numeric dataset (a NeXus title string) is listed without its dtype and refused only if
    the scan uses it as a key. Small numeric datasets (coordinates, probe: up to :data:`PRELOAD_BYTES` each,
    :data:`PRELOAD_TOTAL` together) are read here too, saving a fork per key, except the paths in ``not_preloaded``
    (the patterns: read through :class:`BlockReader` anyway); one that fails to read is left out and read (and
    refused) on use."""
    import h5py

    f = _open(path, member)
    try:
        out: dict[str, list[Any]] = {}
        arrays: dict[str, Any] = {}
        budget = PRELOAD_TOTAL
        stack, objects = [f], 0
        while stack:
            group = stack.pop()
            try:
                names = list(group.keys())
            except Exception as exc:
                raise CorruptArchiveError(f"cannot list HDF5 group {group.name} ({exc})"[:400], member=member) from None
            for name in names:
                objects += 1
                if objects > MAX_OBJECTS:
                    raise ArchiveLimitError(f"more than {MAX_OBJECTS} HDF5 objects; a scan holds a handful",
                                            member=member)
                # soft and external links refused, never followed (io.h5's check, messages cut as every one here)
                check_link(group, name, member=member, max_len=400)
                try:
                    node = group[name]
                except Exception as exc:
                    raise CorruptArchiveError(f"cannot open HDF5 object {group.name}/{name} ({exc})"[:400],
                                              member=member) from None
                if isinstance(node, h5py.Group):
                    stack.append(node)
                elif isinstance(node, h5py.Dataset):
                    check_dataset(node, member=member, numeric=False)  # virtual, external storage: refused here
                    if node.dtype.kind not in ALLOWED_KINDS:  # listed, refused only if the scan uses it as a key
                        out[node.name] = [[int(d) for d in node.shape], None, non_numeric_reason(node)]
                        continue
                    check_storage(node, member=member)
                    out[node.name] = [[int(d) for d in node.shape], node.dtype.str, None]
                    nbytes = int(np.prod(node.shape, dtype=np.int64)) * node.dtype.itemsize
                    if nbytes <= min(PRELOAD_BYTES, budget) and node.name not in not_preloaded:
                        try:
                            arrays[node.name] = np.asarray(node[()])
                            budget -= nbytes
                        except Exception:  # noqa: BLE001 - read again on use, where the error names the key
                            pass
        return {"datasets": out, "arrays": arrays}
    finally:
        f.close()


def _child_read(path: str, dataset: str, selection: tuple[Any, ...], member: str, key: str) -> np.ndarray:
    f = _open(path, member)
    try:
        return _select(_checked(f, dataset, member), selection, member, key)
    finally:
        f.close()


def _checked(f, dataset: str, member: str):  # type: ignore[no-untyped-def]
    """(child) The dataset, re-checked: hard links, no virtual/external storage, numeric dtype, allowed filters."""
    d = get_dataset(f, dataset, member=member)
    check_storage(d, member=member)
    return d


def open_block_reader(path: str, dataset: str, member: str) -> tuple[Any, Any]:
    """(child, once per :class:`BlockReader`) the open file and its checked dataset."""
    f = _open(path, member)
    try:
        return f, _checked(f, dataset, member)
    except BaseException:
        f.close()
        raise


def read_block(state: tuple[Any, Any], selection: list[Any], member: str, key: str) -> np.ndarray:
    """(child, per block) ``selection`` of the dataset ``open_block_reader`` checked."""
    return _select(state[1], tuple(selection), member, key)


class BlockReader:
    """Pattern blocks of one HDF5 dataset, read by libhdf5 in one long-lived isolated child.

    Why: a fork, a file open and a dataset check per block cost 7-40 ms (``read_isolated``); the child here opens
    and checks once, then answers each block in about the time libhdf5 takes (``io.h5_isolated.IsolatedWorker``:
    same limits per block, same one-line errors, a crash ends the reader)."""

    def __init__(self, path: str, dataset: str, key: str) -> None:
        self.member, self.key = os.path.basename(path), key
        self._worker = IsolatedWorker(open_block_reader, (path, dataset, self.member), read_block,
                                      member=self.member)

    def read(self, selection: tuple[Any, ...]) -> np.ndarray:
        out = self._worker.call(list(selection), self.member, self.key)
        if not isinstance(out, np.ndarray):
            raise CorruptArchiveError("isolated HDF5 read returned no array", member=self.member, field=self.key)
        return out

    def close(self) -> None:
        self._worker.close()


def _select(d, selection: tuple[Any, ...], member: str, key: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(child) ``d[selection]`` with libhdf5 failures as one CorruptArchiveError naming the key.

    ``selection``: ``("all",)``, ``("range", lo, hi)`` or ``("points", indices)`` on the first axis,
    ``("last", indices)`` on the last axis; a 4-D ``(M, N, N, 1)`` dataset is read without its channel axis
    (range and points)."""
    squeeze = d.ndim == 4
    kind = selection[0]
    try:
        if kind == "all":
            out = d[()]
        elif kind == "range":
            out = d[selection[1]:selection[2], :, :, 0] if squeeze else d[selection[1]:selection[2]]
        elif kind == "points":
            out = d[selection[1], :, :, 0] if squeeze else d[selection[1]]
        elif kind == "last":
            out = d[:, :, selection[1]]
        else:
            raise FormatError(f"unknown selection {kind!r}", field=key)
    except FormatError:
        raise
    except Exception as exc:  # truncated chunks, failing filters: h5py's OSError variants
        raise CorruptArchiveError(f"cannot read ({exc.__class__.__name__}: {exc})"[:400], member=member,
                                  field=key) from None
    return np.asarray(out)
