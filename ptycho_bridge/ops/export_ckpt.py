"""Export any archive as the Lightning ``.ckpt`` Ptychodus 1.7's PyTorch reconstructor loads, or refuse.

Why: Ptychodus loads PyTorch models only as upstream torchapi-devel checkpoints. This operation takes
the network of any archive we read — a torchapi-devel checkpoint or its bridge-2 migration (as is),
an upstream-main torch archive, a TF archive (through convert's TF → torch rules first) — checks
that torchapi-devel builds exactly that network (``spec.expressible`` target ``ptychodus-ckpt``;
a refusal names the field), writes the bytes with :mod:`converters.pytorch.ckpt`, reads them back
through our own reader (spec, every tensor bit for bit, every config field) and only then renames
the file into place. Nothing is written on any error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.ckpt import checkpoint_object, encode_checkpoint, torchapi_spec
from converters.pytorch.layout import TORCHAPI_CONFIG_KEYS, VARIANT_TORCHAPI
from converters.pytorch.read import LightningCheckpointReader
from ptycho_bridge.errors import FormatError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.atomic import atomic_write, refuse_existing
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import BridgeArchive
from ptycho_bridge.ops.convert import plan_conversion, target_tensors
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors

PRIMARY = "diffraction_to_obj"


def checkpoint_source(arch: BridgeArchive) -> tuple[NetworkSpec, dict[str, np.ndarray], Mapping[str, Any] | None, list[str]]:
    """(spec, canonical tensors, source configs, notes) of the network to write; TF goes through convert."""
    notes: list[str] = []
    if arch.backend == "tensorflow":
        plan = plan_conversion(arch, "pytorch")
        entry = arch.models[PRIMARY]
        notes += [f"TF → torch: {c}" for c in plan.choices]
        return plan.target_spec, target_tensors(entry, plan), None, notes
    entry = arch.models.get(PRIMARY)
    if entry is None or entry.spec is None:
        raise FormatError(f"the archive has no {PRIMARY} network with weights", member=str(arch.path))
    config = arch.torch_config if isinstance(arch.torch_config, Mapping) else None
    configs = {k: config[k] for k in TORCHAPI_CONFIG_KEYS if k in config} if config else None
    return entry.spec, dict(entry.tensors), configs or None, notes


def _verify(blob: bytes, label: str, spec: NetworkSpec, state_names: list[str], tensors: Mapping[str, np.ndarray],
            configs: Mapping[str, Any]) -> None:
    """Read the bytes back through our reader: same spec, tensors bit for bit, same configs."""
    with SafeZip(blob, label=label) as zf:
        back = LightningCheckpointReader().read(zf, label)
    entry = back.models[PRIMARY]
    problems = []
    if entry.spec != spec:
        problems.append(f"spec {entry.spec} != {spec}")
    for name in state_names:
        if name not in entry.tensors or not np.array_equal(entry.tensors[name], tensors[name]):
            problems.append(f"tensor {name!r} differs")
    if {k: back.torch_config[k] for k in TORCHAPI_CONFIG_KEYS} != dict(configs):  # type: ignore[index]
        problems.append("configs differ")
    if problems:  # a writer bug, never bad input: say so loudly
        raise AssertionError(f"written checkpoint does not read back: {problems[:3]}")


def export_checkpoint(src: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Write ``src``'s network to ``out`` as a torchapi-devel Lightning checkpoint; returns the report."""
    target = Path(out)
    refuse_existing(target, force=force)
    arch = read_archive(src)
    spec, tensors, configs, notes = checkpoint_source(arch)
    spec = torchapi_spec(spec)
    obj, more = checkpoint_object(spec, tensors, configs=configs)
    notes += more
    blob = encode_checkpoint(obj, filename=target.name)
    written = {name: np.asarray(tensors[name]) for name in expected_tensors(spec)}
    written.update({TORCH_AUX_PREFIX + k[len("model."):]: v for k, v in obj["state_dict"].items()
                    if not k.startswith("model.autoencoder.")})
    _verify(blob, target.name, spec, list(written), written, obj["hyper_parameters"])
    with atomic_write(target, force=force) as fh:
        fh.write(blob)
    return {
        "source": str(src),
        "source_era": arch.era,
        "source_backend": arch.backend,
        "output": str(target),
        "bytes": len(blob),
        "variant": VARIANT_TORCHAPI,
        "network": spec.to_dict(),
        "n_tensors": len(obj["state_dict"]),
        "notes": notes,
        "warnings": list(arch.warnings),
    }


__all__ = ["checkpoint_source", "export_checkpoint"]
