"""The metadata of ``model.weights.h5`` and ``model.h5`` read without libhdf5, when the pure scan understands them.

Why: ``inspect`` needs only shapes, dtypes, the weight groups' ``name`` attributes, every dataset path and
``model.h5``'s ``intensity_scale``; asking h5py costs its import (~80 ms with numpy) plus a forked child
(:mod:`ptycho_bridge.io.h5_isolated`). :func:`ptycho_bridge.io.h5meta.scan` reads them from the bytes. The
contract with the h5py path (``converters.tensorflow.read``): each function here either returns exactly what
that path returns for the same bytes, or None ("not answered"), and the caller then runs the h5py path, whose
errors are the authoritative ones. The global heap check that path runs first (pure Python) runs here too, so a
file it refuses is refused with the same error before the scan is trusted. Tensor *data* is still read by
libhdf5 in the isolated child; :func:`check_loaded` holds those arrays to the shapes and dtypes reported here.
"""

from __future__ import annotations

from typing import Any

from converters.tensorflow.layout import CONV_VARS, MODEL_H5_SCALE_ATTR
from ptycho_bridge.errors import FormatError
from ptycho_bridge.io.h5 import check_global_heaps
from ptycho_bridge.io.h5meta import scan

WEIGHT_INDEX = {param: index for index, param in CONV_VARS}["weight"]


def scan_weights(weights_bytes: bytes, conv_paths: list[str], label: str) -> dict[str, Any] | None:
    """What ``read._scan_weights`` returns (per conv path shape, dtype and the group's ``name``; every dataset
    path in walk order), or None where the pure scan cannot answer exactly that."""
    check_global_heaps(weights_bytes, member=label)
    meta = scan(weights_bytes)
    if meta is None:
        return None
    convs: dict[str, Any] = {}
    for path in conv_paths:
        found = meta.datasets.get(f"/{path}")
        if found is None:  # missing, or a path h5py would normalise: its error (or answer) decides
            return None
        group, index = path.rsplit("/", 1)
        name = None
        if index == WEIGHT_INDEX:
            name = meta.attributes.get(f"/{group}", {}).get("name")
            if name is not None and not isinstance(name, str):  # UNSUPPORTED or a non-string value
                return None
        shape, dtype = found
        convs[path] = {"shape": list(shape), "dtype": dtype, "name": name}
    return {"convs": convs, "datasets": list(meta.datasets)}


def scan_scale(data: bytes, label: str) -> tuple[bool, float | None]:
    """``(True, value)`` with what ``read._read_scale`` returns (the float, or None when the attribute is
    absent), or ``(False, None)`` where the pure scan cannot answer (the h5py path then decides)."""
    check_global_heaps(data, member=label)
    meta = scan(data)
    if meta is None:
        return False, None
    value = meta.attributes["/"].get(MODEL_H5_SCALE_ATTR)
    if value is None:
        return True, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # a scalar number of any width
        return True, float(value)
    return False, None  # a string, an array, an undecoded value: the h5py path raises its error


def check_loaded(arrays: dict[str, Any], expected: dict[str, tuple[tuple[int, ...], str, str]], label: str) -> None:
    """Each array libhdf5 returned has the shape and dtype the metadata scan reported.

    ``expected`` maps a tensor name to (stored shape, dtype string, dataset path). A difference means the two
    parsers read the file differently, which a crafted file could exploit; it is refused, never smoothed over.
    """
    for name, (shape, dtype, path) in expected.items():
        arr = arrays[name]
        got = (tuple(int(d) for d in arr.shape), str(arr.dtype))
        if got != (tuple(shape), dtype):
            raise FormatError(f"dataset {path}: libhdf5 reads shape {list(got[0])} {got[1]}, the metadata read "
                              f"reported {list(shape)} {dtype}; refused", member=label)
