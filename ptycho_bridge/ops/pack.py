"""``pack``: a training checkpoint + the training-time parameters it lacks → an archive upstream's loader opens.

Why: upstream's PyTorch training leaves a Lightning ``.ckpt`` (or a bare ``model.pth`` state_dict,
or the folder ``save_pytorch`` writes: ``pytorch_manifest.json`` beside the ``.ckpt``), but its
``load_inference_bundle_torch`` needs a ``wts.h5.zip`` whose ``params.dill`` records the training
``intensity_scale`` — which a checkpoint does not hold (its ``model_config.intensity_scale`` is the
initial value, not the trained one). ``migrate`` therefore cannot write those members; ``pack`` takes
the scale (and any params) from the caller, or from the ``save_pytorch`` manifest's
``params_cfg_snapshot``, and writes through :mod:`ptycho_bridge.ops.torch_archive`.

Scale precedence: ``--intensity-scale`` or the ``--params`` file's ``intensity_scale`` (explicit; the
two options are exclusive), else the one the checkpoint folder records (reported), else an error
naming both options. Nothing is unpickled with ``pickle``/``dill``/``torch.load``: checkpoints go
through the torch zip decoder, params files through the inert pickle reader, every size bounded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.pytorch import torchzip
from converters.pytorch.configs import PARAMS_TO_CONFIG_RENAMES, SPEC_OWNED, TORCH_PARAMS_DEFAULTS
from converters.pytorch.spec import spec_from_torch
from ptycho_bridge.errors import ConversionRefused, CorruptArchiveError, FormatError
from ptycho_bridge.formats.bridge2.params import decode_value
from ptycho_bridge.formats.detect import open_container, read_archive
from ptycho_bridge.io.atomic import refuse_existing
from ptycho_bridge.io.safepickle import find_opaque, load
from ptycho_bridge.ops.torch_archive import TorchSource, canonical_tensors, positive_scale, write_torch_archive

SAVE_PYTORCH_MANIFEST = "pytorch_manifest.json"  # upstream's save_pytorch folder marker
MAX_JSON_BYTES = 16 * 1024 * 1024  # params.json / pytorch_manifest.json
MAX_PICKLE_BYTES = 256 * 1024 * 1024  # params.dill (holds the probe)
SCALE_OPTIONS = "--intensity-scale X (the training intensity scale upstream records in params.dill) or --params FILE"


@dataclass
class PackResult:
    """What ``pack`` wrote and from what (the ``pack-report`` schema)."""

    checkpoint: str
    source_kind: str  # lightning-ckpt | state-dict | save_pytorch-folder
    output: str
    intensity_scale: float
    scale_source: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "source_kind": self.source_kind, "output": self.output,
                "intensity_scale": self.intensity_scale, "scale_source": self.scale_source, "notes": list(self.notes)}


def _bounded_bytes(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise CorruptArchiveError("file not found", member=str(path))
    size = path.stat().st_size
    if size > limit:
        raise FormatError(f"{size} bytes is over the {limit}-byte bound for this file", member=str(path))
    return path.read_bytes()


def read_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``params.dill`` (inert pickle reader) or ``params.json`` (plain, or bridge-2's typed form) as a dict."""
    p = Path(path)
    label = p.name
    if p.suffix == ".json":
        try:
            doc = json.loads(_bounded_bytes(p, MAX_JSON_BYTES))
        except ValueError as exc:
            raise FormatError(f"not valid JSON ({exc})", member=label) from None
        if isinstance(doc, dict) and doc.get("format") == "ptycho-bridge-params":
            def no_arrays(ref: dict[str, Any]) -> Any:
                raise FormatError("a bridge-2 params.json with array references needs its archive; "
                                  "pass the archive's params another way", member=label)
            doc = decode_value(doc.get("params"), load_array=no_arrays)
    else:
        doc = load(_bounded_bytes(p, MAX_PICKLE_BYTES), member=label)
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise FormatError(f"params must be a dict with string keys, found {type(doc).__name__}", member=label)
    opaque = [k for k, v in doc.items() if find_opaque(v)]  # unknown objects: kept out, never executed
    return {k: v for k, v in doc.items() if k not in opaque}


def _save_pytorch_folder(folder: Path) -> tuple[Path, dict[str, Any]]:
    """``pytorch_manifest.json`` → (the checkpoint it names, its ``params_cfg_snapshot``)."""
    where = str(folder / SAVE_PYTORCH_MANIFEST)
    try:
        manifest = json.loads(_bounded_bytes(folder / SAVE_PYTORCH_MANIFEST, MAX_JSON_BYTES))
    except ValueError as exc:
        raise FormatError(f"not valid JSON ({exc})", member=where) from None
    if not isinstance(manifest, dict) or manifest.get("backend") != "pytorch":
        raise FormatError("expected an object with backend 'pytorch'", member=where, field="backend")
    name = manifest.get("checkpoint")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise FormatError(f"checkpoint must name a file in this folder, found {name!r:.80}", member=where,
                          field="checkpoint")
    snapshot = manifest.get("params_cfg_snapshot") or {}
    if not isinstance(snapshot, dict):
        raise FormatError("params_cfg_snapshot must be an object", member=where, field="params_cfg_snapshot")
    return folder / name, snapshot


def params_from_torch_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The params.dill values a checkpoint's torch configs already hold (batch size, epochs, data paths …).

    Only keys upstream's torch ``params.dill`` has, never the network-deciding or scale fields
    (those come from the spec and the caller); the inverse of the writer's params → config copy.
    """
    out: dict[str, Any] = {}
    for section in ("training_config",):  # data_config fields (n_subsample …) are not 1:1 with params
        values = (config or {}).get(section) or {}
        for key, value in values.items():
            if key in TORCH_PARAMS_DEFAULTS and key not in SPEC_OWNED and isinstance(value, (bool, int, float, str)):
                out.setdefault(key, value)
    for legacy, (section, key) in PARAMS_TO_CONFIG_RENAMES.items():
        value = ((config or {}).get(section) or {}).get(key)
        if isinstance(value, (bool, int, float, str)):
            out[legacy] = value
    return out


def checkpoint_source(path: Path, params: dict[str, Any]) -> tuple[TorchSource, str]:
    """A Lightning ``.ckpt`` or a bare ``model.pth`` → (a source without its scale yet, the kind)."""
    zf = open_container(path)
    try:
        if not torchzip.is_torch_zip(zf):
            raise FormatError("not a torch.save file (a Lightning .ckpt or a model.pth state_dict)", member=zf.label)
        data = torchzip.load_torch_zip(zf, member_label=zf.label)
    finally:
        zf.close()
    if isinstance(data, dict) and "state_dict" in data and "hyper_parameters" in data:
        arch = read_archive(path)  # the Lightning reader: spec from hyper_parameters, strict shapes
        entry = arch.primary
        assert entry.spec is not None
        tensors = canonical_tensors(dict(entry.tensors), member=f"{path.name} [state_dict]")
        notes = [f"packed from a Lightning checkpoint ({path.name}, global_step {entry.payload.get('global_step')}); "
                 "optimizer state, loops and callbacks dropped"]
        merged = {**params_from_torch_config(arch.torch_config), **arch.params, **params}
        return TorchSource(entry.spec, tensors, merged, arch.torch_config, 0.0,
                           "lightning-ckpt", notes=notes + [f"source reader warning: {w}" for w in entry.warnings]), \
            "lightning-ckpt"
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) for k in data):
        raise FormatError("expected a Lightning checkpoint or a state_dict (a dict of tensors)", member=path.name)
    tensors = canonical_tensors(data, member=path.name)
    for key in ("N", "gridsize"):
        if key not in params:
            raise ConversionRefused(f"a bare state_dict records no {key}: pass --params with the training params.dill",
                                    field=key)
    spec, warnings = spec_from_torch(N=int(params["N"]), gridsize=int(params["gridsize"]), params=params,
                                     model_config=None, shapes={k: v.shape for k, v in tensors.items()},
                                     member=path.name)
    notes = [f"packed from a bare state_dict ({path.name})", *warnings]
    return TorchSource(spec, tensors, dict(params), None, 0.0, "torch-state-dict", notes=notes), "state-dict"


def pack(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    intensity_scale: float | None = None,
    params_path: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> PackResult:
    """Write ``output`` from ``checkpoint``; see the module docstring for where the scale comes from."""
    if intensity_scale is not None and params_path is not None:
        raise ConversionRefused("give either --intensity-scale or --params, not both", field="intensity_scale")
    target = Path(output)
    refuse_existing(target, force=force)
    path = Path(checkpoint)
    params: dict[str, Any] = {}
    recorded: tuple[Any, str] | None = None
    if path.is_dir():
        if not (path / SAVE_PYTORCH_MANIFEST).exists():
            raise CorruptArchiveError(f"folder has no {SAVE_PYTORCH_MANIFEST} (upstream save_pytorch's marker)",
                                      member=str(path))
        path, snapshot = _save_pytorch_folder(path)
        params.update({k: v for k, v in snapshot.items() if isinstance(v, (bool, int, float, str, type(None)))})
        if snapshot.get("intensity_scale") is not None:
            recorded = (snapshot["intensity_scale"], f"{SAVE_PYTORCH_MANIFEST} params_cfg_snapshot")
    if params_path is not None:
        params.update(read_params_file(params_path))
    src, kind = checkpoint_source(path, params)
    if kind == "lightning-ckpt" and Path(checkpoint).is_dir():
        kind = "save_pytorch-folder"
    if intensity_scale is not None:
        src.intensity_scale, src.scale_source = positive_scale(intensity_scale), "--intensity-scale"
    elif params_path is not None and "intensity_scale" in params:
        src.intensity_scale = positive_scale(params["intensity_scale"], what="intensity_scale")
        src.scale_source = f"--params {Path(params_path).name}"
    elif recorded is not None:
        src.intensity_scale, src.scale_source = positive_scale(recorded[0]), recorded[1]
    else:
        raise ConversionRefused(f"{path.name} records no training intensity_scale: pass {SCALE_OPTIONS}",
                                field="intensity_scale")
    src.notes.insert(0, "written by ptycho-bridge pack")
    write_torch_archive(target, src, force=force)
    return PackResult(str(checkpoint), kind, str(target), src.intensity_scale, src.scale_source, src.notes)


__all__ = ["SAVE_PYTORCH_MANIFEST", "PackResult", "checkpoint_source", "pack", "read_params_file"]
