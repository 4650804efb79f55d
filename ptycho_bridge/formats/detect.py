"""Open any supported archive: detect its era and hand it to that era's reader.

Why: callers (CLI, converters, tests) ask for "the archive" and get one :class:`BridgeArchive`,
whatever wrote it. Detection looks only at the central directory and the small root manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptycho_bridge.errors import CorruptArchiveError, FormatError, UnsupportedError
from ptycho_bridge.formats.base import EraReader, type_name
from ptycho_bridge.formats.bridge2.verify import verify_checksums
from ptycho_bridge.formats.eras import candidate_readers, reader_classes
from ptycho_bridge.formats.legacy import LEGACY_MANIFEST
from ptycho_bridge.io.safezip import DEFAULT_LIMITS, Limits, SafeZip
from ptycho_bridge.model import BridgeArchive


def detect_reader(zf: SafeZip) -> tuple[type[EraReader], dict[str, Any]]:
    """The reader class for an open container and the manifests detection decoded (pass them to
    ``read``), or :class:`UnsupportedError` saying what was seen."""
    hints: dict[str, Any] = {}
    for reader in candidate_readers(zf):
        if reader.detect(zf, hints):
            return reader, hints
    names = zf.names()
    if "manifest.json" in names:
        raise UnsupportedError("manifest.json is neither a ptycho-bridge manifest nor a torch-manifest-v1", member=zf.member_label("manifest.json"))
    if LEGACY_MANIFEST in names:
        manifest = hints.get(LEGACY_MANIFEST)
        version = manifest.get("version") if isinstance(manifest, dict) else None
        if isinstance(manifest, dict):
            shown = f"{type_name(version)} (not executed)" if getattr(version, "type_name", None) else repr(version)
            known = ", ".join(repr(r.legacy_manifest_version) for r in reader_classes() if r.legacy_manifest_version)
            raise UnsupportedError(f"unknown archive era: manifest.dill version {shown} (known: {known})",
                                   member=zf.member_label(LEGACY_MANIFEST), field="version")
        raise FormatError(f"{LEGACY_MANIFEST} must be a dict, found {type_name(manifest)}", member=zf.member_label(LEGACY_MANIFEST))
    raise FormatError("no manifest (manifest.json or manifest.dill) and not a Lightning checkpoint", member=zf.label)


def open_container(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> SafeZip:
    p = Path(path)
    if not p.exists():
        raise CorruptArchiveError("file not found", member=str(p))
    if p.is_dir():
        candidate = p / "wts.h5.zip"
        if not candidate.exists():
            raise CorruptArchiveError("directory has no wts.h5.zip", member=str(p))
        p = candidate
    if p.stat().st_size == 0:
        raise CorruptArchiveError("empty file (0 bytes), expected a zip archive", member=str(p))
    return SafeZip(p, label=p.name, limits=limits)


def read_archive(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS, verify: bool = True,
                 full_check: bool = False, lazy_arrays: bool = False) -> BridgeArchive:
    """Read any supported archive (a ``wts.h5.zip``, its folder, or a Lightning ``.ckpt``).

    ``verify`` (the default; archives with checksums, i.e. bridge-2): every byte handed out is checked
    against the manifest when it is read -- ``params.json`` and each ``weights.h5`` member by sha256
    (the probe included), each tensor view by its own sha256 -- and a mismatch raises
    :class:`ChecksumError`. ``verify=False`` trusts the content (``inspect``, ``--no-verify``).
    ``full_check=True`` additionally runs :func:`verify_checksums` before returning (what ``validate``
    does: every member, every tensor, every ``offset`` against the HDF5 metadata).
    ``lazy_arrays=True`` (``inspect``): arrays in ``params`` (the probe) are
    :class:`~ptycho_bridge.io.deferred.DeferredArray`, known by shape and dtype, never built unless used.
    """
    zf = open_container(path, limits)
    try:
        reader, hints = detect_reader(zf)
        arch = reader(verify=verify, lazy_arrays=lazy_arrays).read(zf, str(path), hints)
        if full_check and reader.has_checksums:
            verify_checksums(zf, arch.manifest)
        return arch
    finally:
        zf.close()
