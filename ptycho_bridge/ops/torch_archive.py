"""A trained torch network (spec + canonical tensors + configs + scale) → a checked bridge-2 torch archive.

Why: ``pack`` (a Lightning ``.ckpt`` or ``model.pth`` on disk) and ``save_torch`` (a module or
state_dict in memory) end in the same place: an archive whose legacy members upstream's
``load_inference_bundle_torch`` opens (``manifest.dill``, ``<model>/model.pth``, ``<model>/params.dill``,
``torch_scaling_metadata.pt``, the autoencoder as upstream's sentinel) beside the neutral bridge-2
members. This module owns that last step once: it refuses what upstream's strict loader would
refuse (unknown keys, wrong shapes, non-finite weights, a bad scale) *before* writing, and checks
the written temporary file — ``validate`` passes, and both the neutral tensors and the legacy
``model.pth`` read back bit-identical — before the atomic rename. Nothing is written on any error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.configs import torch_config_for, torch_params_dill
from converters.pytorch.layout import FORWARD_MODEL_AUX, TORCH_CONFIG_KEYS, TORCH_MODELS
from converters.pytorch.read import TorchBundleReader
from converters.pytorch.write import torch_legacy_members
from ptycho_bridge.errors import ConversionRefused, FormatError, SpecError
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.spec.mapping import TORCH_AUTOENCODER_PREFIXES, TORCH_AUX_PREFIX, torch_to_canonical
from ptycho_bridge.spec.network import NetworkSpec, check_tensors, expected_tensors

PRIMARY = "diffraction_to_obj"
# training-only tensors upstream's Unsupervised PtychoPINN holds (its strict loader needs exactly these)
KNOWN_AUX = frozenset(TORCH_AUX_PREFIX + name for name in FORWARD_MODEL_AUX)
# params.dill keys that decide the network: a params file given beside a checkpoint must agree with it
NETWORK_PARAMS = (("N", "N"), ("gridsize", "gridsize"), ("n_filters_scale", "n_filters_scale"),
                  ("object.big", "object_big"), ("probe.big", "probe_big"))


@dataclass
class TorchSource:
    """Everything a torch archive is written from; ``scale_source`` says where the scale came from."""

    spec: NetworkSpec
    tensors: dict[str, np.ndarray]
    params: dict[str, Any]
    torch_config: dict[str, Any] | None
    intensity_scale: float
    source_era: str
    scale_source: str = ""
    notes: list[str] = field(default_factory=list)


def positive_scale(value: Any, *, what: str = "intensity_scale") -> float:
    """``value`` as a positive finite float, or :class:`ConversionRefused` naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConversionRefused(f"{what} must be a positive finite number, got {value!r:.60}", field=what, value=value)
    scale = float(value)
    if not (math.isfinite(scale) and scale > 0):
        raise ConversionRefused(f"{what} must be a positive finite number, got {scale!r}", field=what, value=scale)
    return scale


def canonical_tensors(state: Mapping[str, np.ndarray], *, member: str) -> dict[str, np.ndarray]:
    """A state_dict (upstream keys ``model.autoencoder.*`` / ``autoencoder.*``, or canonical names) → canonical.

    Upstream keys are mapped with :func:`torch_to_canonical`; keys outside the autoencoder must be
    upstream's training-only tensors (:data:`KNOWN_AUX`), anything else is refused by name, since
    upstream's strict ``load_state_dict`` would refuse it too.
    """
    if not state:
        raise ConversionRefused("the state_dict is empty: not a PtychoPINN network", field="state_dict")
    upstream = any(k.startswith(TORCH_AUTOENCODER_PREFIXES) for k in state)
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = torch_to_canonical(key) if upstream else key
        if name.startswith(TORCH_AUX_PREFIX) and name not in KNOWN_AUX:
            raise SpecError(f"unexpected key {key!r}: not a tensor of upstream's PtychoPINN (strict loading would "
                            f"refuse it); expected the autoencoder and {sorted(FORWARD_MODEL_AUX)}", member=member)
        if name in out:
            raise SpecError(f"state_dict keys map twice onto canonical tensor {name!r}", member=member)
        out[name] = np.asarray(value)
    return out


def check_network_tensors(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, member: str) -> None:
    """Strict: every spec tensor present with its shape, nothing unknown, float dtype, all finite."""
    check_tensors(spec, {k: tuple(np.shape(v)) for k, v in tensors.items()}, member=member,
                  allow_extra_prefixes=(TORCH_AUX_PREFIX,))
    for name, value in tensors.items():
        if name.startswith(TORCH_AUX_PREFIX) and name not in KNOWN_AUX:
            raise SpecError(f"unexpected training tensor {name!r}", member=member)
        if not np.issubdtype(value.dtype, np.floating):
            raise SpecError(f"tensor {name!r} has dtype {value.dtype}, expected a float type", member=member)
        if not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise SpecError(f"tensor {name!r} holds {bad} non-finite value(s) (NaN/inf): refusing to save it",
                            member=member)


def check_params_agree(spec: NetworkSpec, params: Mapping[str, Any], *, member: str) -> None:
    """Network keys of ``params`` (when present) must describe ``spec``."""
    for key, attr in NETWORK_PARAMS:
        if key in params and params[key] != getattr(spec, attr):
            raise SpecError(f"params says {params[key]!r} but the network's weights and config say "
                            f"{getattr(spec, attr)!r}", member=member, field=key)


def _verify(tmp: Path, src: TorchSource) -> None:
    """The written file: validates, and neutral and legacy tensors read back bit-identical."""
    result = validate_path(tmp)
    if not result["valid"]:
        raise FormatError(f"written archive fails validation: {result['errors'][0]}", member=str(tmp))
    neutral = read_archive(tmp).primary
    with SafeZip(tmp, label=tmp.name) as zf:  # the legacy members alone, as upstream's torch loaders see them
        legacy = TorchBundleReader().read(zf, str(tmp), {}).primary
    for label, entry in (("weights.h5", neutral), ("model.pth", legacy)):
        for name in expected_tensors(src.spec):
            if not np.array_equal(np.asarray(entry.tensors[name]), np.asarray(src.tensors[name], dtype=np.float32)):
                raise FormatError(f"tensor {name!r} did not read back identical from {label}", member=str(tmp))


def write_torch_archive(path: str | os.PathLike[str], src: TorchSource, *, force: bool = False) -> Path:
    """Write ``src`` as bridge-2 + upstream's torch bundle members; checked before the atomic rename."""
    scale = positive_scale(src.intensity_scale)
    check_network_tensors(src.spec, src.tensors, member="state_dict")
    check_params_agree(src.spec, src.params, member="params")
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in src.tensors.items()}
    base = {k: v for k, v in (src.torch_config or {}).items() if k in TORCH_CONFIG_KEYS} or None
    legacy = torch_legacy_members(src.spec, tensors, src.params, torch_config=base, intensity_scale=scale,
                                  models=TORCH_MODELS)
    config = torch_config_for(src.spec, src.params, base)
    dill = torch_params_dill(src.params, src.spec, intensity_scale=scale, model_config=config["model_config"])
    params = {**src.params, **dill}
    notes = [*src.notes, f"intensity_scale {scale!r}" + (f" from {src.scale_source}" if src.scale_source else ""),
             f"torch bundle members written by converters.pytorch.write: {', '.join(sorted(legacy))}"]
    models = {
        PRIMARY: ModelToWrite(src.spec, tensors, "torch-state-dict", f"{PRIMARY}/model.pth", notes=notes),
        "autoencoder": ModelToWrite(None, {}, "torch-sentinel", "autoencoder/model.pth", sentinel="autoencoder",
                                    notes=["placeholder {'_sentinel': 'autoencoder'} as upstream's save_torch_bundle writes"]),
    }
    return write_archive(Path(path), force=force, check=lambda tmp: _verify(tmp, src), backend="pytorch",
                         source_era=src.source_era, models=models, params=params, intensity_scale=scale,
                         torch_config=src.torch_config if src.torch_config else config, legacy_members=legacy)


__all__ = [
    "KNOWN_AUX",
    "TorchSource",
    "canonical_tensors",
    "check_network_tensors",
    "check_params_agree",
    "positive_scale",
    "write_torch_archive",
]
