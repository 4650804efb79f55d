"""Write the legacy members upstream's PyTorch loaders read, with numpy only (no torch needed).

Why: a bridge-2 archive with ``backend='pytorch'`` must stay openable by upstream's
``load_inference_bundle_torch`` (and not fool the plain ``load_torch_bundle``), so it carries the
members ``save_torch_bundle`` writes (``../shared/docs/upstream-formats.md`` §2-§3): ``manifest.dill``,
``<model>/model.pth`` (a ``torch.save`` zip of the Lightning ``state_dict``; the autoencoder's is a
sentinel dict), ``<model>/params.dill`` and ``torch_scaling_metadata.pt`` (the four torch configs
that decide CBAM, batch norm and the ``c_outer`` override, which ``params.dill`` does not carry).

This module orders the state dict and assembles the members; the configs and params come from
:mod:`converters.pytorch.configs`, the ``torch.save`` zips from :func:`converters.pytorch.torchzip.torch_zip_bytes`,
the plain pickles from :func:`ptycho_bridge.io.safepickle.writer.plain_pickle`, and every member name
and version from :mod:`converters.pytorch.layout`.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Sequence

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.configs import torch_config_for, torch_params_dill
from converters.pytorch.layout import (
    FORWARD_MODEL_AUX,
    LIGHTNING_PREFIX,
    METADATA_MEMBER,
    METADATA_SCHEMA,
    SENTINEL_KEY,
    TORCH_CONFIG_KEYS,
    TORCH_MODELS,
    TORCH_VERSION,
)
from converters.pytorch.torchzip import torch_zip_bytes
from ptycho_bridge.errors import SpecError
from ptycho_bridge.formats.legacy import LEGACY_MANIFEST
from ptycho_bridge.io.safepickle.writer import plain_pickle
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX, canonical_to_torch
from ptycho_bridge.spec.network import NetworkSpec, check_tensors, expected_tensors


def state_dict_from_canonical(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    *,
    prefix: str = LIGHTNING_PREFIX,
    aux: Mapping[str, np.ndarray] | None = None,
) -> "collections.OrderedDict[str, np.ndarray]":
    """Upstream torch ``state_dict`` (numpy values, upstream key order) for writing ``model.pth``.

    The network tensors are checked strictly against ``spec``. Training-only tensors (canonical
    names under ``training.``, e.g. ``training.forward_model.alpha``) come from ``tensors`` and
    ``aux``; ``aux`` wins where both hold one (converters use it to fill what upstream's strict
    loader needs). ``prefix`` is ``model.autoencoder.`` (Lightning) or ``autoencoder.`` (bare).
    """
    shapes = {name: tuple(np.shape(value)) for name, value in tensors.items()}
    check_tensors(spec, shapes, member="canonical tensors", allow_extra_prefixes=(TORCH_AUX_PREFIX,))
    extras: dict[str, np.ndarray] = {k: v for k, v in tensors.items() if k.startswith(TORCH_AUX_PREFIX)}
    for name, value in (aux or {}).items():
        if not name.startswith(TORCH_AUX_PREFIX):
            raise SpecError(f"auxiliary tensor {name!r} must be named under {TORCH_AUX_PREFIX!r}", member="canonical tensors")
        extras[name] = value
    merged = {**{name: tensors[name] for name in expected_tensors(spec)}, **extras}
    out: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    for name, value in merged.items():
        key = canonical_to_torch(name, prefix=prefix)
        if key in out:
            raise SpecError(f"two tensors map to the torch key {key!r}", member="canonical tensors")
        out[key] = np.array(value, copy=True)
    return out


def lightning_state_dict(
    spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, model_config: Mapping[str, Any]
) -> "collections.OrderedDict[str, np.ndarray]":
    """Upstream's Lightning ``state_dict`` (upstream key names and order) from canonical tensors.

    Network tensors follow :func:`expected_tensors` (upstream's module order); training-only tensors
    (``training.*``) follow. For the Unsupervised model, missing ``forward_model`` parameters are
    filled with ones ``[num_datasets]`` (their initial value; forward_predict never reads them).
    """
    aux = {k: np.asarray(v) for k, v in tensors.items() if k.startswith(TORCH_AUX_PREFIX)}
    if model_config.get("mode", "Unsupervised") == "Unsupervised":
        n = int(model_config.get("num_datasets", 1))
        for name in FORWARD_MODEL_AUX:
            aux.setdefault(TORCH_AUX_PREFIX + name, np.ones((n,), dtype=np.float32))
        ordered = [TORCH_AUX_PREFIX + n_ for n_ in FORWARD_MODEL_AUX]
        aux = {**{k: aux[k] for k in ordered}, **{k: v for k, v in aux.items() if k not in ordered}}
    return state_dict_from_canonical(spec, tensors, prefix=LIGHTNING_PREFIX, aux=aux)


def torch_legacy_members(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    *,
    torch_config: Mapping[str, Any] | None,
    intensity_scale: float,
    models: Sequence[str] = TORCH_MODELS,
) -> dict[str, bytes]:
    """Every member ``save_torch_bundle`` (+ its scaling metadata) writes, as ``{path: bytes}``.

    ``torch_config`` is the source's torch config (model/data/training/inference dicts) or None to
    build one from the template, params and spec (:func:`torch_config_for`). The first model gets
    the weights; any other is upstream's sentinel ``{'_sentinel': name}``.
    """
    if not models:
        raise ValueError("at least one model name is required")
    if not (isinstance(intensity_scale, (int, float)) and math.isfinite(intensity_scale) and intensity_scale > 0):
        raise ValueError(f"intensity_scale must be a positive finite number, got {intensity_scale!r}")
    config = torch_config_for(spec, params, torch_config)
    mc = config["model_config"]
    params_blob = plain_pickle(torch_params_dill(params, spec, intensity_scale=intensity_scale, model_config=mc))
    members: dict[str, bytes] = {
        LEGACY_MANIFEST: plain_pickle({"models": list(models), "version": TORCH_VERSION}),
    }
    for index, name in enumerate(models):
        payload: Any = lightning_state_dict(spec, tensors, model_config=mc) if index == 0 else {SENTINEL_KEY: name}
        members[f"{name}/model.pth"] = torch_zip_bytes(payload, prefix="model")
        members[f"{name}/params.dill"] = params_blob
    metadata = {"schema_version": METADATA_SCHEMA, **{k: config[k] for k in TORCH_CONFIG_KEYS}, "ci_statistics": None}
    members[METADATA_MEMBER] = torch_zip_bytes(metadata, prefix="archive")
    return members


__all__ = [
    "lightning_state_dict",
    "state_dict_from_canonical",
    "torch_legacy_members",
]
