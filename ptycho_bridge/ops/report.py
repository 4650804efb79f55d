"""Machine-readable reports for ``inspect`` and ``validate`` (schemas ``inspect-report`` and
``validate-report``), built from a :class:`BridgeArchive` without loading tensor data unless asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveError, ChecksumError, SchemaError, SpecError
from ptycho_bridge.formats.bridge2.verify import verify_checksums
from ptycho_bridge.formats.detect import detect_reader, open_container
from ptycho_bridge.io.safezip import DEFAULT_LIMITS, Limits
from ptycho_bridge.model import BridgeArchive
from ptycho_bridge.spec.history import variant_notes
from ptycho_bridge.spec.network import NetworkSpec


def network_summary(arch: BridgeArchive) -> dict[str, Any] | None:
    entry = arch.models.get("diffraction_to_obj") or next((m for m in arch.models.values() if m.spec), None)
    if entry is None or entry.spec is None:
        return None
    spec = entry.spec.to_dict()
    spec["channels"] = entry.spec.channels
    variant = upstream_variant(arch.backend, entry.spec)
    if variant is not None:
        spec["upstream_variant"] = variant
    history = variant_notes(entry.spec, arch.backend, reassembly_centring=entry.reassembly_centring)
    if history:  # how this network differs from the one today's upstream builds (ptycho_bridge.spec.history)
        spec["variants"] = [v.to_dict() for v in history]
    return spec


def upstream_variant(backend: str, spec: NetworkSpec) -> str | None:
    """Which upstream torch network a PyTorch archive holds: ``'torchapi-devel'`` (the branch Ptychodus 1.7
    loads: outer branch without the border mask) or ``'main'`` (upstream main's ``ptycho_torch``); None for
    other backends, whose network has one upstream definition."""
    if backend != "pytorch":
        return None
    return "main" if spec.outer_mask else "torchapi-devel"


def inspect_report(arch: BridgeArchive, *, tensors: bool = False) -> dict[str, Any]:
    """What ``inspect --json`` prints."""
    probe = arch.probe
    models: dict[str, Any] = {}
    for name, entry in arch.models.items():
        item: dict[str, Any] = {
            "sentinel": entry.sentinel,
            "network": entry.spec.to_dict() if entry.spec else None,
            "n_tensors": len(entry.tensor_info),
            "tensor_bytes": entry.nbytes,
            "payload": {k: v for k, v in entry.payload.items() if v is not None},
            "warnings": list(entry.warnings),
        }
        if tensors:
            item["tensors"] = [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "source_name": t.source_name, "sha256": t.sha256}
                for t in entry.tensor_info.values()
            ]
        models[name] = item
    return {
        "path": str(arch.path),
        "era": arch.era,
        "backend": arch.backend,
        "format_version": arch.manifest.get("format_version") if arch.era == "bridge-2" else None,
        "source_era": arch.manifest.get("source_era") if arch.era == "bridge-2" else None,
        "has_checksums": arch.has_checksums,
        "intensity_scale": arch.intensity_scale,
        "probe": None if probe is None else {"shape": [int(d) for d in probe.shape], "dtype": str(probe.dtype)},
        "network": network_summary(arch),
        "models": models,
        "warnings": list(arch.warnings),
        "notes": list(arch.notes),
        "conversion": _conversion(arch),
        "provenance": provenance(arch),
    }


def _conversion(arch: BridgeArchive) -> dict[str, Any] | None:
    """The manifest's record of a backend conversion (from/to backend and every choice made), if any."""
    conv = arch.manifest.get("conversion") if arch.era == "bridge-2" else None
    return dict(conv) if isinstance(conv, dict) else None


def provenance(arch: BridgeArchive) -> dict[str, Any]:
    """Where a bridge-2 archive came from: the tool and version that wrote it, when, and what the migration
    recorded (the primary model's notes); all empty for a legacy era, which records none of it."""
    if arch.era != "bridge-2":
        return {"tool": None, "tool_version": None, "created": None, "migration": []}
    created_by = arch.manifest.get("created_by") or {}
    primary = (arch.manifest.get("models") or {}).get("diffraction_to_obj") or {}
    notes = primary.get("notes") if isinstance(primary, dict) else None
    return {
        "tool": created_by.get("tool"),
        "tool_version": created_by.get("version"),
        "created": arch.manifest.get("created"),
        "migration": [str(n) for n in notes] if isinstance(notes, list) else [],
    }


def located_error(result: dict[str, Any]) -> str:
    """The first error of a :func:`validate_path` result, named by the path the user gave, once.

    Reading errors already start with the archive's label (``wts.h5.zip:params.dill: …``, the file's
    name) and the CLI used to prefix the path as well (``fake.zip: fake.zip: not a readable zip file``).
    Here the leading label is replaced by the path as given; an error without one gets the path prefixed.
    """
    path = str(result["path"])
    message = str(result["errors"][0])
    for label in (path, Path(path).name, str(Path(path) / "wts.h5.zip"), "wts.h5.zip"):
        if message.startswith(label + ":"):
            rest = message[len(label):]
            return (path if label in (path, Path(path).name) else str(Path(path) / "wts.h5.zip")) + rest
    return f"{path}: {message}"


def finite_problems(arch: BridgeArchive) -> list[str]:
    problems = []
    for name, entry in arch.models.items():
        for tname, arr in entry.tensors.items():
            if arr.dtype.kind in "fc":
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                if bad:
                    problems.append(f"{name}: tensor {tname!r} holds {bad} non-finite value(s) (NaN/Inf)")
    return problems


def _check_of(exc: ArchiveError) -> str:
    """Which report row a reading error belongs to."""
    if isinstance(exc, SchemaError):
        return "schema"
    if isinstance(exc, SpecError):
        return "spec"
    if isinstance(exc, ChecksumError):
        return "checksums"
    return "structure"


def validate_path(path: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Run every check that applies to the archive's era; never raises for bad archives."""
    result: dict[str, Any] = {"path": str(path), "era": None, "valid": False, "checks": [], "errors": [],
                              "warnings": [], "notes": []}
    checks = result["checks"]

    def fail(check: str, exc: Exception) -> dict[str, Any]:
        checks.append({"check": check, "ok": False, "detail": str(exc)})
        result["errors"].append(str(exc))
        return result

    try:
        zf = open_container(path, limits)
    except ArchiveError as exc:
        return fail("container", exc)
    try:
        checks.append({"check": "container", "ok": True,
                       "detail": f"{len(zf.names())} members, {zf.total_size} bytes uncompressed, within limits"})
        try:
            reader, hints = detect_reader(zf)
            result["era"] = reader.era
            arch = reader(verify=False).read(zf, str(path), hints)  # verify_checksums below checks it all
        except ArchiveError as exc:
            return fail(_check_of(exc), exc)
        if reader.has_checksums:
            checks.append({"check": "schema", "ok": True, "detail": "manifest.json and params.json match their schemas"})
        else:
            checks.append({"check": "schema", "ok": None, "detail": f"{reader.era} has no JSON documents to check"})
        checks.append({"check": "structure", "ok": True,
                       "detail": f"models {sorted(arch.models)} read; every tensor matches its network spec"})
        try:
            problems = finite_problems(arch)  # loads every tensor: catches truncated payloads too
        except ArchiveError as exc:
            return fail("spec", exc)
        if problems:
            for p in problems:
                result["errors"].append(p)
            checks.append({"check": "spec", "ok": False, "detail": "; ".join(problems)})
            return result
        checks.append({"check": "spec", "ok": True, "detail": "all tensors loaded, finite, shapes as the spec requires"})
        if reader.has_checksums:

            try:
                checked = verify_checksums(zf, arch.manifest)
            except ArchiveError as exc:
                return fail("checksums", exc)
            checks.append({"check": "checksums", "ok": True, "detail": f"{len(checked)} sha256 checksums verified"})
        else:
            checks.append({"check": "checksums", "ok": None, "detail": f"{reader.era} archives carry no checksums"})
            result["notes"].append(f"{reader.era} is a legacy era: structural checks only, no checksums to verify")
        result["warnings"] = list(arch.warnings) + [w for m in arch.models.values() for w in m.warnings]
        result["notes"] += list(arch.notes)
        result["valid"] = True
        return result
    finally:
        zf.close()
