"""What ``reconstruct`` needs to know about an archive's inference model, read once.

Why a separate step: the pipeline must validate the dataset against the model (``N``, channels)
before any pattern is read, and the per-group merge needs facts the spec may not carry. A torch
archive's ``params.dill`` records neither ``offset`` nor ``max_position_jitter``, so its TF-style
reassembly canvas (``padded_size``) falls back to upstream's ``DEFAULT_CFG`` (4 and 10), as the
reconstruction fixtures' recipe does (``../shared/fixtures/reconstruct/README.md``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import FormatError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.spec.network import NetworkSpec, check_padded_size, tf_padded_size

# upstream DEFAULT_CFG values used when an archive does not record them (torch params.dill lacks both)
UPSTREAM_DEFAULT_OFFSET = 4
UPSTREAM_DEFAULT_MAX_POSITION_JITTER = 10
INFERENCE_MODEL = "diffraction_to_obj"


@dataclass
class ModelInfo:
    """The inference model's facts: spec, canonical tensors, intensity scale, merge parameters."""

    path: str
    sha256: str
    backend: str  # "tensorflow" | "pytorch"
    spec: NetworkSpec
    tensors: Mapping[str, np.ndarray]
    intensity_scale: float
    padded_size: int
    padded_size_source: str
    reassembly_centring: bool  # ModelEntry.reassembly_centring: False for the SavedModel era

    @property
    def N(self) -> int:
        return int(self.spec.N)

    @property
    def gridsize(self) -> int:
        return int(self.spec.gridsize)

    @property
    def channels(self) -> int:
        return int(self.spec.gridsize) ** 2


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_model(path: str | Path, model: str = INFERENCE_MODEL) -> ModelInfo:
    """Read the archive and extract the model facts; raises the project's archive errors."""
    arch = read_archive(path)
    member = Path(path).name
    if model not in arch.models:
        raise FormatError(f"no model {model!r} (models: {sorted(arch.models)})", member=member)
    entry = arch.models[model]
    spec = entry.spec
    if spec is None:
        raise FormatError(f"model {model!r} has no network spec; it cannot be run", member=member)
    if arch.intensity_scale is None:
        raise FormatError("the archive records no intensity_scale", member=member, field="intensity_scale")
    C = int(spec.gridsize) ** 2
    if int(spec.channels_in) != C:
        raise FormatError(f"channels_in={spec.channels_in} but gridsize {spec.gridsize} means {C} patterns per group",
                          member=member, field="channels_in")
    if spec.padded_size is not None:
        padded, source = int(spec.padded_size), "network spec"
    else:
        off = arch.params.get("offset", UPSTREAM_DEFAULT_OFFSET)
        jit = arch.params.get("max_position_jitter", UPSTREAM_DEFAULT_MAX_POSITION_JITTER)
        padded = tf_padded_size(int(spec.N), int(spec.gridsize), int(off), int(jit))
        source = f"N + (gridsize-1)*offset + max_position_jitter with offset={off}, max_position_jitter={jit}"
    check_padded_size(int(spec.N), padded)
    backend = "pytorch" if str(arch.backend).lower() in ("pytorch", "torch") else "tensorflow"
    return ModelInfo(
        path=str(path), sha256=file_sha256(path), backend=backend, spec=spec, tensors=entry.tensors,
        intensity_scale=float(arch.intensity_scale), padded_size=padded, padded_size_source=source,
        reassembly_centring=bool(entry.reassembly_centring),
    )
