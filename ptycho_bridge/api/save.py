"""``save_torch`` / ``save_keras``: a trained network in memory → an archive upstream's loaders open.

Why: a person who trains in Python holds an ``nn.Module``, a ``LightningModule``, a ``state_dict``
or a Keras model, not an archive. These functions turn that object into what the archive writers
take (a :class:`NetworkSpec` plus canonical tensors) and refuse, with the reason, anything that is
not a PtychoPINN network the spec can describe; writing, the strict checks and the read-back before
the atomic rename are :mod:`ptycho_bridge.ops.torch_archive` and :mod:`ptycho_bridge.ops.keras_archive`.
Frameworks are never imported here: objects are recognised by what they provide (``state_dict()``,
``detach()``, ``get_weights``).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.spec import spec_from_torch
from converters.tensorflow.keras_model import spec_and_tensors
from converters.tensorflow.layout import KERAS_MEMBER, model_member
from converters.tensorflow.read import read_keras_payload
from ptycho_bridge.errors import ArchiveError, ConversionRefused, SpecError
from ptycho_bridge.io.atomic import refuse_existing
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.ops.keras_archive import PRIMARY, write_keras_archive
from ptycho_bridge.ops.torch_archive import TorchSource, canonical_tensors, write_torch_archive
from ptycho_bridge.spec.network import NetworkSpec

NETWORK_PREFIXES = ("encoder.", "bottleneck.", "amp.", "phase.")  # canonical names of the autoencoder


def _plain(value: Any, where: str) -> Any:
    """A config value as plain picklable data (what ``torch_scaling_metadata.pt`` may hold)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value, where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise ConversionRefused(f"{where} holds a {type(value).__name__}, which a config cannot store as plain data",
                            field=where)


def config_dict(config: Any, name: str) -> dict[str, Any] | None:
    """An upstream config dataclass or a mapping → a plain dict (None stays None)."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        items = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, Mapping):
        items = dict(config)
    else:
        raise ConversionRefused(f"{name} must be a config dataclass or a dict, got {type(config).__name__}", field=name)
    return {str(k): _plain(v, f"{name}.{k}") for k, v in items.items()}


def _array(key: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ConversionRefused(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor", field=key)
    return np.array(value, copy=True)


def _state_of(obj: Any) -> tuple[dict[str, np.ndarray], NetworkSpec | None, Mapping[str, Any]]:
    """(state_dict as arrays, the spec the object carries or None, its Lightning hparams or {})."""
    hparams: Any = {}
    own: NetworkSpec | None = None
    if isinstance(obj, Mapping):
        raw = obj
    elif callable(getattr(obj, "state_dict", None)):
        raw = obj.state_dict()
        own = obj.spec if isinstance(getattr(obj, "spec", None), NetworkSpec) else None  # our engine's module
        hparams = getattr(obj, "hparams", None) or {}
    else:
        raise ConversionRefused(f"a {type(obj).__name__} is not a PtychoPINN network: expected an nn.Module, a "
                                "LightningModule or a state_dict", field="module")
    state = {str(k): _array(str(k), v) for k, v in raw.items()}
    return state, own, hparams if isinstance(hparams, Mapping) else {}


def _grid(data_config: Mapping[str, Any] | None, params: Mapping[str, Any]) -> tuple[int, int]:
    dc = data_config or {}
    N = dc.get("N", params.get("N"))
    grid = dc.get("grid_size")
    g = grid[0] if isinstance(grid, (list, tuple)) and grid else params.get("gridsize")
    if not isinstance(N, int) or isinstance(N, bool):
        raise ConversionRefused("N is unknown: pass data_config (with N and grid_size) or params with N",
                                field="data_config.N")
    if not isinstance(g, int) or isinstance(g, bool):
        raise ConversionRefused("gridsize is unknown: pass data_config (grid_size) or params with gridsize",
                                field="data_config.grid_size")
    return N, g


def save_torch(
    path: str | os.PathLike[str],
    module_or_state_dict: Any,
    *,
    model_config: Any = None,
    data_config: Any = None,
    intensity_scale: float,
    params: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Save a trained PtychoPINN torch network as bridge-2 + the members ``load_inference_bundle_torch`` reads.

    ``module_or_state_dict``: our engine's module (it carries its spec), upstream's ``PtychoPINN`` /
    ``PtychoPINN_Lightning`` or anything with ``state_dict()`` whose keys are ``model.autoencoder.*`` /
    ``autoencoder.*``, or a ``state_dict`` (torch tensors or numpy arrays). ``model_config`` /
    ``data_config``: upstream's config dataclasses or dicts (a LightningModule's ``hparams`` are used
    when omitted). ``intensity_scale``: the training scale upstream records in ``params.dill``.
    """
    target = Path(path)
    refuse_existing(target, force=force)
    state, own, hparams = _state_of(module_or_state_dict)
    mc = config_dict(model_config if model_config is not None else hparams.get("model_config"), "model_config")
    dc = config_dict(data_config if data_config is not None else hparams.get("data_config"), "data_config")
    given = dict(params or {})
    tensors = canonical_tensors(state, member="state_dict")
    if not any(name.startswith(NETWORK_PREFIXES) for name in tensors):
        raise ConversionRefused(f"a {type(module_or_state_dict).__name__} is not a PtychoPINN network: none of its "
                                f"{len(state)} state_dict keys is a PtychoPINN autoencoder tensor", field="module")
    if own is not None:
        spec = own
    else:
        N, g = _grid(dc, given)
        spec, _ = spec_from_torch(N=N, gridsize=g, params=given, model_config=mc,
                                  shapes={k: v.shape for k, v in tensors.items()}, member="state_dict")
    config = {k: v for k, v in (("model_config", mc), ("data_config", dc)) if v is not None} or None
    source = TorchSource(spec, tensors, given, config, intensity_scale, "torch-state-dict",
                         scale_source="save_torch(intensity_scale=...)",
                         notes=[f"written by ptycho_bridge.save_torch from a {type(module_or_state_dict).__name__}"])
    return write_torch_archive(target, source, force=force)


def _upstream_keras(model: Any, params: Mapping[str, Any]) -> tuple[NetworkSpec, dict[str, np.ndarray]]:
    """Any other Keras model: saved by Keras, then read like upstream's ``model.keras`` (graph analysis)."""
    if not callable(getattr(model, "save", None)):
        raise ConversionRefused(f"a {type(model).__name__} is not a Keras model", field="model")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / KERAS_MEMBER
        model.save(saved)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(model_member(PRIMARY, KERAS_MEMBER), saved.read_bytes())
    try:
        with SafeZip(buf.getvalue(), label="keras model") as zf:
            entry = read_keras_payload(zf, model_member(PRIMARY, KERAS_MEMBER), model_name=PRIMARY, params=dict(params))
            assert entry.spec is not None
            return entry.spec, {k: np.asarray(v) for k, v in entry.tensors.items()}
    except ArchiveError as exc:
        raise ConversionRefused(f"not a PtychoPINN diffraction_to_obj the spec can describe: {exc.reason}",
                                field=exc.field or "model") from None


def save_keras(path: str | os.PathLike[str], model: Any, *, params: Mapping[str, Any], force: bool = False) -> Path:
    """Save a Keras PtychoPINN network as bridge-2 + the members upstream's ``ModelManager`` reads.

    ``model``: a model built by our Keras engine (``converters.tensorflow.keras_model``, trained or
    not), upstream's ``diffraction_to_obj``, or a ``(diffraction_to_obj, autoencoder)`` pair (the
    autoencoder is not written: see ``converters/tensorflow/write.py``). ``params``: upstream's
    ``params.cfg`` as a dict, with the training ``intensity_scale``.
    """
    target = Path(path)
    refuse_existing(target, force=force)
    notes = ["written by ptycho_bridge.save_keras"]
    if isinstance(model, (tuple, list)):
        if not model:
            raise ConversionRefused("an empty model pair", field="model")
        model = model[0]
        notes.append("autoencoder not written (its compiled losses are not plain data); diffraction_to_obj is")
    try:
        spec, tensors = spec_and_tensors(model)
    except (LookupError, AttributeError):
        spec, tensors = _upstream_keras(model, params)
    except SpecError as exc:
        raise ConversionRefused(str(exc), field=exc.field) from None
    return write_keras_archive(target, spec, tensors, params, notes=notes, force=force)


__all__ = ["config_dict", "save_keras", "save_torch"]
