"""Read and validate an upstream PtychoPINN scan dataset (``.npz`` or HDF5) before any work is done.

Keys (upstream's names; ``keys=`` maps canonical name -> name in the file, e.g. an HDF5 path):

=================  ==========  ===========================================================================
canonical          required    accepted
=================  ==========  ===========================================================================
diffraction        yes         ``diff3d`` preferred over ``diffraction`` (upstream's order); amplitude
                               patterns ``(M,N,N)``, ``(N,N,M)`` or ``(M,N,N,1)``; real numeric dtype
xcoords, ycoords   yes         ``(M,)`` finite float64/float32/integer -> float64 (float32 is exact in f64)
x/ycoords_start    no          same checks; unused by inference (upstream requires them, ignores them here)
probeGuess         yes*        ``(N,N)`` or ``(N,N,1)`` finite complex/real; not used by the network
objectGuess        no          2-D numeric; header checked only (unused by inference)
scan_index         no          ``(M,)`` integer; ignored (upstream replaces it with zeros)
=================  ==========  ===========================================================================

(*) ``require_probe=False`` relaxes it. Layout: with the model's ``N`` the layout is unambiguous —
``shape[1:] == (N,N)`` is pattern-first (preferred when both match), ``shape[:2] == (N,N)`` pattern-last.
(Upstream decides by ``shape[0] < shape[2]``, which misreads an ``(M,N,N)`` stack with ``M < N``.)
Every problem raises a :class:`~ptycho_bridge.errors.FormatError` (or another ``ArchiveError``) whose
member is the dataset file and whose field is the key, so the CLI prints one ``error:`` line. A scan is untrusted
input (docs/security.md, "Scans"): ``.npz`` members are bounded before inflating (:mod:`.npzfile`), HDF5 is never
parsed by libhdf5 in this process (:mod:`.h5scan`), and every small key's shape is checked from its header before
any key is read. Pattern finiteness needs the
data, so it is checked by the first streaming pass (:func:`normalise.pattern_energies`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveError, CorruptArchiveError, FormatError
from ptycho_bridge.ops.reconstruct.h5scan import H5Dataset, describe, read_contiguous, read_isolated
from ptycho_bridge.ops.reconstruct.npzfile import NpzMember, check_dtype, read_member, scan_npz
from ptycho_bridge.ops.reconstruct.patterns import H5Patterns, MappedPatterns, PatternSource, StreamPatterns

CANONICAL = ("diffraction", "xcoords", "ycoords", "xcoords_start", "ycoords_start", "probeGuess",
             "objectGuess", "scan_index")
PATTERN_KEYS = ("diff3d", "diffraction")  # upstream's names for the patterns, in its order of preference
MAX_SMALL_BYTES = 1 << 30  # coords / probe / scan_index read whole: 1 GiB bound
MAX_PATTERNS = 50_000_000


@dataclass
class ScanDataset:
    """A validated scan: patterns stay on disk behind ``patterns``; the small arrays are loaded."""

    path: str
    format: str  # "npz" | "hdf5"
    patterns: PatternSource
    x: np.ndarray  # float64 (M,)
    y: np.ndarray
    x_start: np.ndarray | None = None
    y_start: np.ndarray | None = None
    probe: np.ndarray | None = None  # complex64 (N,N)
    object_shape: tuple[int, ...] | None = None
    object_reader: Any = None  # () -> objectGuess ndarray (bounded read), while the dataset is open
    keys_used: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def object_guess(self) -> np.ndarray | None:
        """``objectGuess`` as complex64 (read now, bounded like every small key), or None."""
        if self.object_reader is None:
            return None
        try:
            return np.asarray(self.object_reader()).astype(np.complex64)
        except ArchiveError as exc:
            raise named(exc, self.path) from None

    @property
    def count(self) -> int:
        return self.patterns.count

    def close(self) -> None:
        self.patterns.close()


def named(exc: ArchiveError, path: str) -> ArchiveError:
    """The same error with the dataset file as its member (low-level readers name only the key)."""
    if exc.member:
        return exc
    return type(exc)(exc.reason, member=os.path.basename(path), field=exc.field)


def _layout(key: str, shape: tuple[int, ...], fortran: bool, N: int) -> tuple[tuple[int, int, int], bool, bool]:
    """(storage C-order 3-D shape, pattern_first, transpose) for a declared diffraction shape."""
    if len(shape) == 4:
        if shape[3] != 1 or shape[1:3] != (N, N):
            raise FormatError(f"4-D patterns must be (M,{N},{N},1), got {shape}", field=key)
        shape = shape[:3]
    if len(shape) != 3:
        raise FormatError(f"expected (M,{N},{N}), ({N},{N},M) or (M,{N},{N},1), got shape {shape}", field=key)
    if shape[1:] == (N, N):
        first = True
    elif shape[:2] == (N, N):
        first = False
    else:
        raise FormatError(f"patterns of shape {shape} do not contain {N}x{N} patterns (the model's N={N})", field=key)
    if fortran:  # logical = C-order(reversed shape).T: pattern axis flips side, each pattern is transposed
        return tuple(shape[::-1]), not first, True  # type: ignore[return-value]
    return tuple(shape), first, False  # type: ignore[return-value]


def _real_numeric(key: str, dtype: np.dtype) -> None:
    check_dtype(key, dtype)
    if dtype.kind not in "fiu":
        raise FormatError(f"dtype {dtype} is not a real numeric type (expected float or integer)", field=key)


def _coords_header(key: str, shape: tuple[int, ...], dtype: np.dtype, M: int) -> None:
    """Shape and dtype of a coordinate array from its header, before any byte of it is read."""
    if not (shape == (M,) or shape == (M, 1)):
        raise FormatError(f"expected shape ({M},) (one coordinate per pattern), got {shape}", field=key)
    _real_numeric(key, dtype)


def _probe_header(key: str, shape: tuple[int, ...], dtype: np.dtype, N: int) -> None:
    if not (shape == (N, N) or shape == (N, N, 1)):
        raise FormatError(f"expected shape ({N},{N}) (or ({N},{N},1)), got {shape}", field=key)
    check_dtype(key, dtype)
    if dtype.kind not in "fciu":
        raise FormatError(f"dtype {dtype} is not numeric", field=key)


def non_finite(key: str, a: np.ndarray) -> None:
    """Refuse non-finite values, saying how many and where the first one is (index, or pattern and pixel)."""
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(a)
    count = int(np.count_nonzero(bad))
    if count:
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.ravel())), a.shape))
        where = f"index {first[0]}" if len(first) == 1 else f"position {first}"
        raise FormatError(f"contains {count} non-finite value{'s' if count > 1 else ''} (NaN/Inf; first at {where})",
                          field=key)


def _coords(key: str, a: np.ndarray, M: int) -> np.ndarray:
    """A coordinate array whose header passed :func:`_coords_header` (the readers return exactly the header's shape
    and dtype) as finite float64 ``(M,)``."""
    a = np.asarray(a)
    non_finite(key, a)  # before any cast: a signalling NaN would raise the FP "invalid" flag (a warning line)
    return a.reshape(M).astype(np.float64)


def _probe(key: str, a: np.ndarray, N: int) -> np.ndarray:
    """A probe whose header passed :func:`_probe_header` as finite complex64 ``(N, N)``."""
    a = np.asarray(a).reshape(N, N)
    non_finite(key, a)
    with np.errstate(all="ignore"):  # finite complex128 beyond complex64's range: inf, as np.asarray would give
        return a.astype(np.complex64)


def _resolve(names: set[str], keys: Mapping[str, str] | None, canon: str) -> str | None:
    if keys and canon in keys:
        if keys[canon] not in names:
            raise FormatError(f"mapped key {keys[canon]!r} is not in the file", field=canon)
        return keys[canon]
    if canon == "diffraction":
        for k in PATTERN_KEYS:
            if k in names:
                return k
        return None
    return canon if canon in names else None


def open_dataset(path: str, N: int, *, keys: Mapping[str, str] | None = None, require_probe: bool = True,
                 spool_dir: str | None = None, max_small_bytes: int = MAX_SMALL_BYTES) -> ScanDataset:
    """Open and validate ``path`` (``.npz`` or ``.h5/.hdf5``) for a model taking ``N x N`` patterns."""
    if keys:
        unknown = sorted(set(keys) - set(CANONICAL))
        if unknown:
            raise FormatError(f"unknown canonical name(s) {unknown}; expected some of {CANONICAL}", field="keys")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
        if magic.startswith(b"PK"):
            return _open_npz(path, N, keys, require_probe, spool_dir, max_small_bytes)
        if magic == b"\x89HDF\r\n\x1a\n":
            return _open_h5(path, N, keys, require_probe, max_small_bytes)
    except ArchiveError as exc:
        raise named(exc, path) from None
    except OSError as exc:
        raise CorruptArchiveError(f"cannot read: {exc}", member=os.path.basename(path)) from None
    raise FormatError("neither an .npz (zip) nor an HDF5 file", member=os.path.basename(path))


def _finish(ds: ScanDataset, get: Any, shape_of: Any, dtype_of: Any, names: set[str],
            keys: Mapping[str, str] | None, require_probe: bool, N: int) -> ScanDataset:
    M = ds.count
    used = ds.keys_used
    for canon in ("xcoords", "ycoords"):
        k = _resolve(names, keys, canon)
        if k is None:
            raise FormatError(f"required key missing (expected a ({M},) coordinate array)", field=canon)
        used[canon] = k
    # every small key's shape and dtype from its header first: nothing is read (or allocated) for a scan whose
    # coordinate, start or probe arrays contradict the pattern count M or the model's N
    for canon in ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "probeGuess"):
        k = used[canon] if canon in used else _resolve(names, keys, canon)
        if k is None:
            continue
        if canon == "probeGuess":
            _probe_header(k, tuple(shape_of(k)), dtype_of(k), N)
        else:
            _coords_header(k, tuple(shape_of(k)), dtype_of(k), M)
        used[canon] = k
    for canon, attr in (("xcoords", "x"), ("ycoords", "y"), ("xcoords_start", "x_start"), ("ycoords_start", "y_start")):
        if canon in used:
            setattr(ds, attr, _coords(used[canon], get(used[canon]), M))
    if "probeGuess" in used:
        ds.probe = _probe(used["probeGuess"], get(used["probeGuess"]), N)
    elif require_probe:
        raise FormatError(f"required key missing (expected ({N},{N}) complex)", field="probeGuess")
    k = _resolve(names, keys, "objectGuess")
    if k is not None:
        shp, dt = shape_of(k), dtype_of(k)
        check_dtype(k, dt)
        if len(shp) != 2 or dt.kind not in "fciu":
            raise FormatError(f"expected a 2-D numeric object, got {shp} {dt}", field=k)
        ds.keys_used["objectGuess"], ds.object_shape = k, shp
        ds.object_reader = lambda key=k: get(key)
        ds.notes.append("objectGuess: not used by inference; only for the comparison image")
    k = _resolve(names, keys, "scan_index")
    if k is not None:
        shp, dt = shape_of(k), dtype_of(k)
        check_dtype(k, dt)
        if shp not in ((M,), (M, 1)) or dt.kind not in "iu":
            raise FormatError(f"expected ({M},) integers, got {shp} {dt}", field=k)
        ds.keys_used["scan_index"] = k
        ds.notes.append("scan_index: ignored (upstream replaces it with zeros)")
    return ds


def _open_npz(path: str, N: int, keys: Mapping[str, str] | None, require_probe: bool, spool_dir: str | None,
              max_small: int) -> ScanDataset:
    members = scan_npz(path)  # a hostile central directory: CorruptArchiveError "unreadable .npz"
    names = set(members)
    dk = _resolve(names, keys, "diffraction")
    if dk is None:
        raise FormatError("required key missing (expected 'diff3d' or 'diffraction')", field="diffraction")
    m: NpzMember = members[dk]
    _real_numeric(dk, m.dtype)
    storage, first, transpose = _layout(dk, m.shape, m.fortran_order, N)
    count = storage[0] if first else storage[2]
    if not 1 <= count <= MAX_PATTERNS:
        raise FormatError(f"{count} patterns; expected 1..{MAX_PATTERNS}", field=dk)
    desc = f"{os.path.basename(path)}:{dk} {m.shape} {m.dtype}{' fortran' if m.fortran_order else ''}"
    if m.stored:
        src: PatternSource = MappedPatterns(path, m.data_offset, storage, m.dtype, first, transpose, desc + " (mapped)")
    else:
        src = StreamPatterns(path, m, storage, first, transpose, desc + " (deflated)", spool_dir)
    ds = ScanDataset(path, "npz", src, np.empty(0), np.empty(0), keys_used={"diffraction": dk})
    try:
        return _finish(ds, lambda k: read_member(path, members[k], max_small), lambda k: members[k].shape,
                       lambda k: members[k].dtype, names, keys, require_probe, N)
    except BaseException:
        ds.close()
        raise


def _open_h5(path: str, N: int, keys: Mapping[str, str] | None, require_probe: bool, max_small: int) -> ScanDataset:
    """An HDF5 scan: metadata from the pure scan or the isolated child; no libhdf5 call in this process (h5scan)."""
    member = os.path.basename(path)
    # refuses links, virtual/external storage, filters outside the allow-list, unbacked data; the patterns are never
    # preloaded with the listing (H5Patterns reads them through the BlockReader child)
    patterns = (keys["diffraction"],) if keys and "diffraction" in keys else PATTERN_KEYS
    facts = describe(path, not_preloaded=patterns)
    names = {p.lstrip("/") for p in facts.datasets}

    def info(k: str) -> tuple[H5Dataset, np.dtype]:
        d = facts.datasets["/" + k.lstrip("/")]
        if d.dtype is None:  # listed by the child, never read: a string or compound dataset used as a key
            raise FormatError(d.refusal or "non-numeric dtype", field=k)
        check_dtype(k, d.dtype)
        return d, d.dtype

    def get(k: str) -> np.ndarray:
        d, dt = info(k)
        nbytes = int(np.prod(d.shape, dtype=np.int64)) * dt.itemsize
        if nbytes > max_small:
            raise FormatError(f"{nbytes} bytes exceeds the {max_small}-byte bound for this key", field=k)
        if d.preloaded is not None:  # describe() kept it only if it has the listed shape and dtype
            return d.preloaded
        if d.storage is not None:  # the listed shape and dtype, by construction
            return read_contiguous(path, d, k)
        out = read_isolated(path, "/" + k.lstrip("/"), ("all",), key=k)
        if out.shape != d.shape or out.dtype != d.dtype:  # the file changed since it was described
            raise CorruptArchiveError(f"read {out.dtype}{list(out.shape)}, the metadata says {d.dtype}{list(d.shape)}",
                                      field=k)
        return out

    dk = _resolve(names, keys, "diffraction")
    if dk is None:
        raise FormatError("required dataset missing (expected 'diff3d' or 'diffraction')", field="diffraction")
    d, dt = info(dk)
    _real_numeric(dk, dt)
    storage, first, _ = _layout(dk, d.shape, False, N)
    count = storage[0] if first else storage[2]
    if not 1 <= count <= MAX_PATTERNS:
        raise FormatError(f"{count} patterns; expected 1..{MAX_PATTERNS}", field=dk)
    desc = f"{member}:{dk} {d.shape} {d.dtype}"
    if d.storage is not None:  # contiguous data located by the metadata scan: mapped, no libhdf5 at all
        src: PatternSource = MappedPatterns(path, d.storage[0], storage, dt, first, False,
                                            desc + " (hdf5, mapped)")
    else:
        src = H5Patterns(path, "/" + dk.lstrip("/"), storage, dt, first, desc + " (hdf5, isolated libhdf5)", dk)
    ds = ScanDataset(path, "hdf5", src, np.empty(0), np.empty(0), keys_used={"diffraction": dk})
    ds.notes.append(f"HDF5 metadata read by {facts.source}")
    try:
        return _finish(ds, get, lambda k: info(k)[0].shape, lambda k: info(k)[1], names, keys, require_probe, N)
    except BaseException:
        ds.close()
        raise
