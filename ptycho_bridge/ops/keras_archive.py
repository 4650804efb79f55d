"""A Keras network (spec + canonical tensors + params) → a checked bridge-2 TensorFlow archive.

Why: ``save_keras`` must give an archive that upstream's ``ModelManager.load_multiple_models`` (and
so Ptychodus) opens: the TF-era members :func:`converters.tensorflow.write.tf_legacy_members` builds
(``manifest.dill``, ``model.keras``, ``params.dill`` …) beside the neutral bridge-2 members. As for
torch (:mod:`ptycho_bridge.ops.torch_archive`) everything is refused before writing when it does not
fit (shapes, non-finite weights, a bad scale, params that contradict the network), and the written
temporary file is checked — validates, neutral and legacy tensors read back identical — before the
atomic rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.layout import KERAS_MEMBER, SUPPORTED_MODELS, default_padded_size, model_member
from converters.tensorflow.read import TfModelManagerReader
from converters.tensorflow.write import tf_legacy_members, tf_params
from ptycho_bridge.errors import FormatError
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.ops.torch_archive import check_network_tensors, positive_scale
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors

PRIMARY = SUPPORTED_MODELS[0]


def _verify(tmp: Path, spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> None:
    result = validate_path(tmp)
    if not result["valid"]:
        raise FormatError(f"written archive fails validation: {result['errors'][0]}", member=str(tmp))
    neutral = read_archive(tmp).primary
    with SafeZip(tmp, label=tmp.name) as zf:  # the TF-era members alone, as upstream's loader sees them
        legacy = TfModelManagerReader().read(zf, str(tmp), {}).primary
    for label, entry in (("weights.h5", neutral), ("model.keras", legacy)):
        for name in expected_tensors(spec):
            if not np.array_equal(np.asarray(entry.tensors[name]), np.asarray(tensors[name])):
                raise FormatError(f"tensor {name!r} did not read back identical from {label}", member=str(tmp))


def write_keras_archive(
    path: str | os.PathLike[str],
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    *,
    notes: list[str] | None = None,
    force: bool = False,
) -> Path:
    """Write bridge-2 + upstream's TF-era members; ``params['intensity_scale']`` is the training scale."""
    scale = positive_scale(params.get("intensity_scale"), what="params['intensity_scale']")
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    check_network_tensors(spec, arrays, member="keras model")
    padded = spec.padded_size if spec.padded_size is not None else default_padded_size(spec.N, spec.gridsize, params)
    cfg = tf_params(spec, params, scale, padded_size=padded)  # refuses params that contradict the network
    legacy = tf_legacy_members(spec, arrays, params, scale)
    model = ModelToWrite(spec, arrays, "keras", model_member(PRIMARY, KERAS_MEMBER),
                         notes=[*(notes or []), f"TF-era members written by converters.tensorflow.write: "
                                f"{', '.join(sorted(legacy))}"])
    return write_archive(Path(path), force=force, check=lambda tmp: _verify(tmp, spec, arrays), backend="tensorflow",
                         source_era="keras-model", models={PRIMARY: model}, params=cfg, intensity_scale=scale,
                         legacy_members=legacy)


__all__ = ["write_keras_archive"]
