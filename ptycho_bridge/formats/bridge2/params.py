"""Typed JSON for parameter snapshots (``params.json``), lossless for what upstream stores.

Why: ``params.dill`` mixes ints, floats, bools, None, strings, tuples and one complex array (the
probe). Plain JSON would turn tuples into lists and cannot hold arrays or NaN. We keep JSON's own
types and add three tagged forms, all described by ``schemas/params.schema.json``:
``{"$tuple": [...]}``, ``{"$float": "nan"|"inf"|"-inf"}`` and ``{"$array": {member, dataset, dtype,
shape}}`` — the array itself lives in an HDF5 member under ``/params/``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import FormatError


def encode_value(value: Any, *, key: str, store_array: Callable[[str, np.ndarray], dict[str, Any]]) -> Any:
    """Python value → typed JSON; arrays are handed to ``store_array(key, array)`` for a reference."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return {"$float": "nan"}
        if math.isinf(f):
            return {"$float": "inf" if f > 0 else "-inf"}
        return f
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return {"$array": store_array(key, value)}
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v, key=f"{key}.{i}", store_array=store_array) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_value(v, key=f"{key}.{i}", store_array=store_array) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise FormatError(f"parameter {key!r} has a key {k!r} that typed JSON cannot hold", field=key)
            out[k] = encode_value(v, key=f"{key}.{k}", store_array=store_array)
        return out
    raise FormatError(f"parameter {key!r} has a value of type {type(value).__name__} that cannot be stored", field=key)


def decode_value(value: Any, *, load_array: Callable[[dict[str, Any]], Any]) -> Any:
    """Typed JSON → Python value; ``load_array(ref)`` reads a referenced array."""
    if isinstance(value, list):
        return [decode_value(v, load_array=load_array) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$tuple"}:
            return tuple(decode_value(v, load_array=load_array) for v in value["$tuple"])
        if set(value) == {"$float"}:
            return float(value["$float"])
        if set(value) == {"$array"}:
            return load_array(value["$array"])
        return {k: decode_value(v, load_array=load_array) for k, v in value.items()}
    return value
