"""Helpers shared by the TF-era writer tests (test_keras_config.py, test_write.py): the variant table
without a fixture and the HDF5/config comparisons. Local to this package because only these two
modules use them."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np

from ptycho_bridge.spec.network import (
    NetworkSpec,
    expected_tensors,
    tf_padded_size,
    tf_spec,
)

D2O = "diffraction_to_obj"
SID = re.compile(rb'"shared_object_id": (\d+)')

VARIANTS = {
    "pad_object_false": dict(N=64, gridsize=1, n_filters_scale=2, pad_object=False),
    "probe_big_false": dict(N=64, gridsize=1, n_filters_scale=2, probe_big=False),
    "object_big_false": dict(N=64, gridsize=1, n_filters_scale=1, object_big=False),
    "gs2_object_big_false_probe_small": dict(N=64, gridsize=2, n_filters_scale=1, object_big=False, probe_big=False),
    "N128_gs2": dict(N=128, gridsize=2, n_filters_scale=2),
    "N128_gs1_no_pad_no_big": dict(N=128, gridsize=1, n_filters_scale=1, pad_object=False, object_big=False),
    "N256_gs1": dict(N=256, gridsize=1, n_filters_scale=1),
    "N256_gs2_probe_small": dict(N=256, gridsize=2, n_filters_scale=1, probe_big=False),
    "swish": dict(N=64, gridsize=1, n_filters_scale=1, amp_activation="swish"),
    "softplus_gs2": dict(N=64, gridsize=2, n_filters_scale=1, amp_activation="softplus"),
    "relu_pad_false": dict(N=64, gridsize=1, n_filters_scale=1, amp_activation="relu", pad_object=False),
}


def variant_spec(kw: dict[str, Any]) -> NetworkSpec:
    args = dict(object_big=True, probe_big=True, pad_object=True, amp_activation="sigmoid") | kw
    return tf_spec(**args, padded_size=tf_padded_size(args["N"], args["gridsize"], 4, 10))


def random_tensors(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_tensors(spec).items()}


def normalise_ids(doc: Any) -> Any:
    """``doc`` with every ``shared_object_id`` replaced by 0, after checking there is one distinct id.

    Keras writes the Python ``id()`` of the float32 DTypePolicy the layers share: provenance only,
    it merely ties the configs together when loading. Nothing else is normalised.
    """
    raw = json.dumps(doc).encode()
    ids = set(SID.findall(raw))
    assert len(ids) == 1, f"expected one shared object id, found {ids}"
    return json.loads(SID.sub(b'"shared_object_id": 0', raw))


def h5_tree(data: bytes) -> dict[str, Any]:
    """Every group/dataset: kind, attributes, and for datasets shape, dtype, layout and values."""
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name: str, obj: Any) -> None:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", attrs, obj.shape, str(obj.dtype), obj.chunks, obj.compression, obj[()])
            else:
                out[name] = ("group", attrs)
        f.visititems(visit)
        out["/"] = ("root", dict(f.attrs))
    return out


def assert_same_tree(mine: dict[str, Any], theirs: dict[str, Any], *, values: bool = True) -> None:
    assert sorted(mine) == sorted(theirs)
    for path, item in theirs.items():
        got = mine[path]
        assert got[:-1] == item[:-1] if item[0] == "dataset" else got == item, path
        if item[0] == "dataset" and values:
            assert np.array_equal(got[-1], item[-1]), path
            assert got[-1].dtype == item[-1].dtype, path
