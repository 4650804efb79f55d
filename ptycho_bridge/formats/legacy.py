"""The root ``manifest.dill`` that both upstream backends' ``wts.h5.zip`` eras share.

Why here: the TF ``ModelManager`` era (version ``1.0``) and the torch bundle era (``2.0-pytorch``) write
the same member with the same shape — ``{"models": [...], "version": ...}`` — so its reading, checking
and warnings belong to neither backend; both readers (and era detection) use these.
"""

from __future__ import annotations

from typing import Any

from ptycho_bridge.errors import FormatError
from ptycho_bridge.formats.base import (
    opaque_names,
    read_pickle,
    require_dict,
    require_field,
    require_model_names,
)
from ptycho_bridge.io.safezip import SafeZip

LEGACY_MANIFEST = "manifest.dill"


def read_legacy_manifest(zf: SafeZip, hints: dict[str, Any]) -> Any:
    """``manifest.dill`` decoded once per open archive (cached in ``hints``)."""
    if LEGACY_MANIFEST not in hints:
        hints[LEGACY_MANIFEST] = read_pickle(zf, LEGACY_MANIFEST) if LEGACY_MANIFEST in zf else None
    return hints[LEGACY_MANIFEST]


def check_legacy_manifest(manifest: Any, zf: SafeZip, version: str) -> list[str]:
    where = zf.member_label(LEGACY_MANIFEST)
    manifest = require_dict(manifest, member=where, what=LEGACY_MANIFEST)
    models = require_field(manifest, "models", list, member=where)
    got = require_field(manifest, "version", str, member=where)
    if got != version:
        raise FormatError(f"version {got!r}, expected {version!r}", member=where, field="version")
    return require_model_names(models, member=where)


def legacy_manifest_warnings(manifest: dict[str, Any]) -> list[str]:
    """Unknown pickled objects anywhere in ``manifest.dill`` are reported by name (they were never run)."""
    opaque = opaque_names(manifest)
    return [f"{LEGACY_MANIFEST} holds values of unknown type {opaque} (kept inert, never executed)"] if opaque else []


def has_legacy_version(zf: SafeZip, hints: dict[str, Any], version: str) -> bool:
    """Era detection for the pickled eras: a root ``manifest.dill`` (and no ``manifest.json``) whose
    ``version`` is ``version``; the decoded manifest is cached in ``hints`` for the reader."""
    if "manifest.json" in zf or LEGACY_MANIFEST not in zf:
        return False
    manifest = read_legacy_manifest(zf, hints)
    return isinstance(manifest, dict) and manifest.get("version") == version
