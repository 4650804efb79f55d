"""Reader for ``bridge-2``, this project's own format (``docs/archive-format.md``).

Root ``manifest.json`` (validated by ``schemas/manifest.schema.json``) is the source of truth; it
indexes every member with size + sha256 and every canonical tensor with dtype, shape and sha256.
``params.json`` holds the parameter snapshot; arrays (the probe) live in the primary model's
``weights.h5`` under ``/params/``. Checksums are verified by :func:`verify_checksums`
(``validate`` runs it; plain reads skip it for speed).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .. import schema
from ..container import SafeZip
from ..errors import ChecksumError, FormatError, SpecError, UnsupportedError
from ..h5io import get_dataset, open_h5, read_array, walk_datasets
from ..model import BridgeArchive, LazyTensors, ModelEntry, TensorInfo
from ..paramsjson import decode_value
from ..spec import NetworkSpec, check_tensors
from .base import EraReader, read_json

FORMAT = "ptycho-bridge"
FORMAT_VERSION = "2.0.0"
TENSOR_GROUP = "tensors"
PARAMS_GROUP = "params"


def tensor_sha256(array: np.ndarray) -> str:
    """sha256 of a tensor's C-order little-endian bytes (the manifest's tensor checksum)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def check_format_version(version: str, *, member: str) -> None:
    major = int(version.split(".")[0])
    supported = int(FORMAT_VERSION.split(".")[0])
    if major > supported:
        raise UnsupportedError(
            f"format_version {version} is newer than this reader supports ({FORMAT_VERSION}); upgrade ptycho-bridge",
            member=member,
            field="format_version",
        )
    if major < supported:
        raise UnsupportedError(f"format_version {version} predates bridge-2", member=member, field="format_version")


class BridgeReader(EraReader):
    era = "bridge-2"
    can_write = True
    has_checksums = True
    backend = "neutral"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        if "manifest.json" not in zf:
            return False
        if "manifest.json" not in hints:
            hints["manifest.json"] = read_json(zf, "manifest.json")
        m = hints["manifest.json"]
        return isinstance(m, dict) and m.get("format") == FORMAT

    def read(self, zf: SafeZip, path: str) -> BridgeArchive:
        where = zf.member_label("manifest.json")
        manifest = read_json(zf, "manifest.json")
        if isinstance(manifest, dict) and isinstance(manifest.get("format_version"), str):
            try:
                check_format_version(manifest["format_version"], member=where)
            except ValueError:
                pass  # the schema names the bad pattern
        schema.validate("manifest", manifest, member=where)
        listed = set(manifest["members"])
        present = set(zf.names()) - {"manifest.json"}
        if present - listed:
            raise FormatError(f"members not listed in manifest.json: {sorted(present - listed)}", member=where, field="members")
        if listed - present:
            raise FormatError(f"members listed in manifest.json but absent: {sorted(listed - present)}", member=where, field="members")

        weights_cache: dict[str, bytes] = {}

        def weights_bytes(member: str) -> bytes:
            # tensors load lazily, after read() returned and the container was closed: reopen by path
            if member not in weights_cache:
                if member not in zf:
                    raise FormatError("weights member listed in manifest.json is absent", member=zf.member_label(member))
                if zf.closed and zf.path is not None:
                    with SafeZip(zf.path, label=zf.label, limits=zf.limits) as again:
                        weights_cache[member] = again.read(member)
                else:
                    weights_cache[member] = zf.read(member)
            return weights_cache[member]

        models: dict[str, ModelEntry] = {}
        for name, entry in manifest["models"].items():
            mwhere = f"{where} models.{name}"
            try:
                spec = NetworkSpec.from_dict(entry["network"])
                spec.check()
            except SpecError as exc:
                raise SpecError(exc.reason, member=mwhere, field=exc.field) from None
            index = entry["tensors"]
            check_tensors(spec, {k: tuple(v["shape"]) for k, v in index.items()}, member=mwhere)
            infos = {
                k: TensorInfo(k, tuple(v["shape"]), v["dtype"], source_name=f"/{TENSOR_GROUP}/{k}", sha256=v["sha256"])
                for k, v in index.items()
            }
            models[name] = ModelEntry(
                name,
                spec,
                LazyTensors(infos, _tensor_loader(zf, entry["weights"], infos, weights_bytes)),
                infos,
                payload=dict(entry["payload"], weights=entry["weights"]),
                warnings=list(entry.get("notes", [])),
            )
        params: dict[str, Any] = {}
        torch_config = None
        if "params.json" in zf:
            pwhere = zf.member_label("params.json")
            doc = read_json(zf, "params.json")
            schema.validate("params", doc, member=pwhere)

            def load_array(ref: dict[str, Any]) -> np.ndarray:
                data = weights_bytes(ref["member"])
                f = open_h5(data, member=zf.member_label(ref["member"]))
                try:
                    arr = read_array(get_dataset(f, ref["dataset"], member=zf.member_label(ref["member"])),
                                     member=zf.member_label(ref["member"]))
                finally:
                    f.close()
                if list(arr.shape) != list(ref["shape"]) or str(arr.dtype) != ref["dtype"]:
                    raise FormatError(
                        f"{ref['dataset']} is {arr.dtype}{list(arr.shape)}, params.json says {ref['dtype']}{ref['shape']}",
                        member=pwhere,
                    )
                return arr

            params = decode_value(doc["params"], load_array=load_array)
            torch_config = decode_value(doc.get("torch_config"), load_array=load_array)
        return BridgeArchive(
            path=path,
            era=self.era,
            backend=manifest["backend"],
            params=params,
            models=models,
            intensity_scale=manifest["intensity_scale"],
            manifest=manifest,
            torch_config=torch_config,
            has_checksums=True,
            members={m.name: m.size for m in zf.iter_members()},
        )


def _tensor_loader(zf: SafeZip, member: str, infos: dict[str, TensorInfo], weights_bytes):  # type: ignore[no-untyped-def]
    label = zf.member_label(member)

    def load() -> dict[str, np.ndarray]:
        f = open_h5(weights_bytes(member), member=label)
        try:
            out = {}
            for name, info in infos.items():
                arr = read_array(get_dataset(f, f"/{TENSOR_GROUP}/{name}", member=label), member=label)
                if tuple(arr.shape) != info.shape or str(arr.dtype) != info.dtype:
                    raise SpecError(
                        f"tensor {name!r} is {arr.dtype}{list(arr.shape)}, manifest says {info.dtype}{list(info.shape)}",
                        member=label,
                    )
                out[name] = arr
            return out
        finally:
            f.close()

    return load


def verify_checksums(zf: SafeZip, manifest: dict[str, Any]) -> list[str]:
    """Every member's size + sha256 and every tensor's sha256; returns what was checked, raises on the first mismatch."""
    checked = []
    for name, meta in manifest["members"].items():
        data = zf.read(name)
        if len(data) != meta["size"]:
            raise ChecksumError(f"size {len(data)} bytes, manifest says {meta['size']}", member=zf.member_label(name))
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta["sha256"]:
            raise ChecksumError(f"sha256 {digest[:16]}…, manifest says {meta['sha256'][:16]}…", member=zf.member_label(name))
        checked.append(name)
    for model, entry in manifest["models"].items():
        label = zf.member_label(entry["weights"])
        f = open_h5(zf.read(entry["weights"]), member=label)
        try:
            names = {p.split("/", 2)[2] for p, _ in walk_datasets(f, member=label) if p.startswith(f"/{TENSOR_GROUP}/")}
            extra = names - set(entry["tensors"])
            if extra:
                raise FormatError(f"tensors not indexed in manifest.json: {sorted(extra)}", member=label)
            for tname, meta in entry["tensors"].items():
                arr = read_array(get_dataset(f, f"/{TENSOR_GROUP}/{tname}", member=label), member=label)
                if tensor_sha256(arr) != meta["sha256"]:
                    raise ChecksumError(f"tensor {tname!r} sha256 does not match manifest.json", member=label)
                checked.append(f"{model}:{tname}")
        finally:
            f.close()
    return checked
