"""converters/tensorflow/read.py: the tf-modelmanager-1 reader's cross-model params check.

Several models of one archive each carry a ``params.dill``; the reader warns when one differs from
the primary's at all (arrays by whole content, NaN equal to NaN, exact types), without ``ops.diff``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.tensorflow.layout import (
    MANIFEST_MEMBER,
    PARAMS_MEMBER,
    PICKLE_PROTOCOL,
    manifest_dict,
)
from converters.tensorflow.write import tf_legacy_members
from ptycho_bridge.formats.detect import read_archive
from tests.converters.tensorflow.cases import D2O, random_tensors, variant_spec

OTHER = "other_model"
PARAMS = {"probe": np.array([[1 + 2j, np.nan]], dtype=np.complex64), "nested": {"t": (1, 2.0, None)}, "x": float("nan")}


def _two_models(tmp_path: Path, other_params: dict[str, Any]) -> Path:
    """A TF-era archive listing D2O and OTHER (same Keras payload), OTHER with ``other_params``."""
    spec = variant_spec(dict(N=64, gridsize=1, n_filters_scale=1))
    members = tf_legacy_members(spec, random_tensors(spec), PARAMS, 10.0)
    ours = pickle.loads(members[f"{D2O}/{PARAMS_MEMBER}"])
    members[MANIFEST_MEMBER] = pickle.dumps(manifest_dict([D2O, OTHER]), protocol=PICKLE_PROTOCOL)
    for name, data in list(members.items()):
        if name.startswith(f"{D2O}/"):
            members[f"{OTHER}/{name.split('/', 1)[1]}"] = data
    members[f"{OTHER}/{PARAMS_MEMBER}"] = pickle.dumps(ours | other_params, protocol=PICKLE_PROTOCOL)
    path = tmp_path / "wts.h5.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


WARNING = f"{OTHER}/params.dill differs from {D2O}/params.dill"


@pytest.mark.parametrize("change", [
    {"x": 1.0},
    {"probe": np.array([[1 + 2j, 0]], dtype=np.complex64)},
    {"probe": np.array([[1 + 2j, np.nan]], dtype=np.complex128)},
    {"nested": {"t": (1, 2.0)}},
    {"nested": {"t": [1, 2.0, None]}},
    {"nested": {"t": (1, 2, None)}},
    {"added": 1},
])
def test_a_differing_params_is_reported(change: dict[str, Any], tmp_path: Path) -> None:
    arch = read_archive(_two_models(tmp_path, change))
    assert WARNING in arch.warnings


@pytest.mark.parametrize("change", [{}, {"x": float("nan")}, {"probe": PARAMS["probe"].copy()}])
def test_equal_params_are_not_reported(change: dict[str, Any], tmp_path: Path) -> None:
    arch = read_archive(_two_models(tmp_path, change))
    assert arch.era == "tf-modelmanager-1" and sorted(arch.models) == sorted([D2O, OTHER])
    assert WARNING not in arch.warnings
