"""Write ``bridge-2`` archives (``docs/archive-format.md``).

Why: one writer for every backend. It writes the neutral members (``manifest.json``,
``params.json``, ``<model>/weights.h5``) and whatever legacy payload members the caller passes
(``model.keras``, ``model.pth``, ``params.dill`` … built by the backend modules), indexes them all
with size + sha256, and commits the zip atomically. ``weights.h5`` members are stored uncompressed
and 64-byte aligned inside the zip so they can be read in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge import __version__, schema
from ptycho_bridge.formats.bridge2.layout import (
    FORMAT,
    FORMAT_VERSION,
    PARAMS_GROUP,
    TENSOR_GROUP,
    tensor_sha256,
)
from ptycho_bridge.formats.bridge2.params import encode_value
from ptycho_bridge.formats.bridge2.read import BridgeReader
from ptycho_bridge.formats.bridge2.verify import verify_checksums
from ptycho_bridge.io.atomic import atomic_write
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import primary_name
from ptycho_bridge.spec.network import NetworkSpec, check_tensors

ALIGNMENT = 64
ALIGN_EXTRA_ID = 0xA11C  # private extra-field id used only for padding
FIXED_DATE = (2020, 1, 1, 0, 0, 0)  # deterministic member timestamps


@dataclass
class ModelToWrite:
    """One model: its spec, canonical tensors and the legacy payload member it comes with.

    A torch-sentinel model (upstream saves ``{'_sentinel': name}`` instead of the autoencoder) has
    ``spec=None``, no tensors, ``payload_kind='torch-sentinel'`` and the placeholder in ``sentinel``.
    """

    spec: NetworkSpec | None
    tensors: Mapping[str, np.ndarray]
    payload_kind: str = "none"
    payload_member: str | None = None
    notes: list[str] = field(default_factory=list)
    sentinel: str | None = None
    reassembly_centring: bool = True  # ModelEntry.reassembly_centring; recorded only when False (format 2.2)


def tensor_layout(array: np.ndarray) -> str:
    return {4: "OIHW", 2: "OI", 1: "vector", 0: "scalar"}.get(array.ndim, "vector")


def signatures(spec: NetworkSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The canonical input/output signature every engine implements (conventions.py)."""
    inputs = [{
        "name": "amplitude", "dtype": "float32", "shape": ["B", spec.channels_in, spec.N, spec.N], "layout": "NCHW",
        "description": "normalised diffraction amplitude x_norm (TF: input / exp(float32(ln s)); torch: input * input_scale_factor)",
    }]
    outputs = [{
        "name": "object", "dtype": "complex64", "shape": ["B", spec.channels_out, spec.N, spec.N], "layout": "NCHW",
        "description": "per-patch complex object amp·exp(iφ), before TF reassembly",
    }]
    return inputs, outputs


def _h5_bytes(tensors: Mapping[str, np.ndarray], params_arrays: Mapping[str, np.ndarray]) -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="earliest") as f:
        group = f.create_group(TENSOR_GROUP)
        for name, arr in tensors.items():
            group.create_dataset(name, data=np.ascontiguousarray(arr))  # contiguous, uncompressed
        if params_arrays:
            pgroup = f.create_group(PARAMS_GROUP)
            for name, arr in params_arrays.items():
                pgroup.create_dataset(name, data=np.ascontiguousarray(arr))
    return buf.getvalue()


def tensor_offsets(image: bytes) -> dict[str, int]:
    """Byte offset of every ``/tensors/<name>`` dataset's raw data inside an HDF5 image (manifest ``offset``).

    Why: the manifest records where each contiguous tensor's bytes start, so readers can take views of
    the member without parsing HDF5 (safetensors-style); ``validate`` cross-checks it against HDF5.
    """
    import h5py

    with h5py.File(io.BytesIO(image), "r") as f:
        group = f[TENSOR_GROUP]
        out = {}
        for name in group:
            offset = group[name].id.get_offset()
            if offset is None:  # the writer makes contiguous datasets; a None here is a writer bug
                raise ValueError(f"tensor {name!r} has no contiguous data offset")
            out[name] = int(offset)
        return out


def _aligned_info(name: str, offset: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    header = 30 + len(name.encode("utf-8"))
    pad = (-(offset + header + 4)) % ALIGNMENT
    info.extra = struct.pack("<HH", ALIGN_EXTRA_ID, pad) + b"\0" * pad
    return info


def build_members(
    *,
    backend: str,
    source_era: str,
    models: Mapping[str, ModelToWrite],
    params: Mapping[str, Any],
    intensity_scale: float | None,
    torch_config: Mapping[str, Any] | None = None,
    legacy_members: Mapping[str, bytes] | None = None,
    conversion: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest, members) of a bridge-2 archive, validated but not yet written."""
    real = [n for n, m in models.items() if m.spec is not None]
    primary = primary_name(real) if real else list(models)[0]
    params_arrays: dict[str, np.ndarray] = {}

    def store_array(key: str, arr: np.ndarray) -> dict[str, Any]:
        dataset = key.replace("/", "_")
        params_arrays[dataset] = arr
        return {"member": f"{primary}/weights.h5", "dataset": f"/{PARAMS_GROUP}/{dataset}",
                "dtype": str(arr.dtype), "shape": [int(d) for d in arr.shape]}

    params_doc: dict[str, Any] = {
        "format": "ptycho-bridge-params",
        "format_version": FORMAT_VERSION,
        "params": {k: encode_value(v, key=k, store_array=store_array) for k, v in params.items()},
    }
    if torch_config is not None:
        params_doc["torch_config"] = encode_value(dict(torch_config), key="torch_config", store_array=store_array)
    schema.validate("params", params_doc, member="params.json")

    members: dict[str, bytes] = {"params.json": json.dumps(params_doc, indent=1, sort_keys=False).encode("utf-8")}
    manifest_models: dict[str, Any] = {}
    for name, model in models.items():
        if model.payload_kind == "torch-sentinel" or model.spec is None:
            if model.payload_kind != "torch-sentinel" or model.tensors or not model.payload_member or model.sentinel is None:
                raise ValueError(f"model {name!r}: only a torch-sentinel (member + sentinel, no tensors) may lack a spec")
            manifest_models[name] = {
                "payload": {"kind": "torch-sentinel", "member": model.payload_member, "sentinel": model.sentinel},
                **({"notes": list(model.notes)} if model.notes else {}),
            }
            continue
        check_tensors(model.spec, {k: tuple(v.shape) for k, v in model.tensors.items()}, member=f"{name}/weights.h5")
        tensors = {k: np.ascontiguousarray(v) for k, v in model.tensors.items()}
        members[f"{name}/weights.h5"] = _h5_bytes(tensors, params_arrays if name == primary else {})
        offsets = tensor_offsets(members[f"{name}/weights.h5"])
        inputs, outputs = signatures(model.spec)
        entry: dict[str, Any] = {
            "network": model.spec.to_dict(),
            "weights": f"{name}/weights.h5",
            "inputs": inputs,
            "outputs": outputs,
            "tensors": {
                k: {"dtype": str(v.dtype), "shape": [int(d) for d in v.shape], "layout": tensor_layout(v),
                    "sha256": tensor_sha256(v), "offset": offsets[k]}
                for k, v in tensors.items()
            },
            "payload": {"kind": model.payload_kind, **({"member": model.payload_member} if model.payload_member else {})},
        }
        if model.notes:
            entry["notes"] = list(model.notes)
        if not model.reassembly_centring:
            entry["reassembly_centring"] = False
        manifest_models[name] = entry
    for member, data in (legacy_members or {}).items():
        if member in members or member == "manifest.json":
            raise ValueError(f"legacy member {member!r} collides with a bridge-2 member")
        members[member] = data
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "source_era": source_era,
        "created_by": {"tool": "ptycho-bridge", "version": __version__},
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "intensity_scale": intensity_scale,
        "models": manifest_models,
        "members": {
            k: {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in sorted(members.items())
        },
    }
    if conversion is not None:
        manifest["conversion"] = dict(conversion)
    schema.validate("manifest", manifest, member="manifest.json")
    return manifest, members


def write_members(path: str | Path, manifest: Mapping[str, Any], members: Mapping[str, bytes], *, force: bool = False,
                  check: Callable[[Path], None] | None = None) -> Path:
    """Write ``manifest.json`` first, then the members; weights stored and aligned, the rest deflated.

    Before the atomic rename the temporary file is checked -- by ``check`` when given (``migrate``
    passes a full validate + diff), else by :func:`self_check` -- so a failing output is never left.
    """
    target = Path(path)
    with atomic_write(target, force=force,
                      check=check if check is not None else lambda tmp: self_check(tmp, label=target.name)) as fh:
        with zipfile.ZipFile(fh, "w") as zf:
            info = zipfile.ZipInfo("manifest.json", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, json.dumps(manifest, indent=1).encode("utf-8"))
            for name, data in members.items():
                if name.endswith("weights.h5"):
                    info = _aligned_info(name, fh.tell())
                else:
                    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
                    info.compress_type = zipfile.ZIP_STORED if name.endswith((".keras", ".pth", ".pt")) else zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                zf.writestr(info, data)
    return target


def self_check(path: Path, *, label: str) -> None:
    """What a reader will do with the written file: open it within the container limits, read it,
    load and hash every tensor, and verify every checksum (raises the reader's ArchiveError)."""
    with SafeZip(path, label=label) as zf:
        arch = BridgeReader(verify=True).read(zf, str(path))
        for entry in arch.models.values():
            dict(entry.tensors)
        verify_checksums(zf, arch.manifest)


def write_archive(
    path: str | Path, *, force: bool = False, check: Callable[[Path], None] | None = None, **kwargs: Any
) -> Path:
    """Build and atomically write a bridge-2 archive; see :func:`build_members` for the arguments.

    ``check`` validates the written temporary file before the rename (nothing is left if it raises).
    """
    manifest, members = build_members(**kwargs)
    return write_members(path, manifest, members, force=force, check=check)
