"""Compare two archives: parameters, torch configs, network specs and canonical tensors.

Why: after a migration or conversion the question is "did anything change?". Both sides are read
into the neutral :class:`BridgeArchive`, so a TF ``ModelManager`` archive and its bridge-2
migration compare equal (same canonical tensors, same params) although their bytes and eras differ.
Equivalence is bit-identity by default; ``atol`` relaxes array and float comparisons to a maximum
absolute difference. The report is plain data (``schemas/diff-report.schema.json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.model import BridgeArchive, ModelEntry

MISSING = object()


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b|`` of two same-shape arrays; 0.0 when bit-identical.

    NaN/Inf at the same place with the same value count as equal; a non-finite value facing any
    other value gives ``inf``.
    """
    if a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes():
        return 0.0
    if a.dtype.kind not in "biufc" or b.dtype.kind not in "biufc":
        return math.inf
    x = a.astype(np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64)
    y = b.astype(x.dtype)

    def same(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (p == q) | (np.isnan(p) & np.isnan(q))

    equal = same(x.real, y.real) & same(x.imag, y.imag) if x.dtype.kind == "c" else same(x, y)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(x - y)
    diff = np.where(equal, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()) if diff.size else 0.0


def _finite_or_none(d: float) -> float | None:
    """JSON has no Infinity: a non-finite mismatch (NaN/Inf facing another value) is reported as null."""
    return d if math.isfinite(d) else None


def _describe(value: Any) -> Any:
    """A JSON-safe short form of a parameter value for the report."""
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": [int(d) for d in value.shape]}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, tuple):
        return {"tuple": [_describe(v) for v in value]}
    if isinstance(value, list):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


def python_scalar(value: Any) -> Any:
    """A numpy number/bool scalar as the Python scalar of exactly its value; anything else unchanged.

    Why: bridge-2's typed JSON stores ``numpy.float32(988.2118)`` as the JSON number of its exact
    value (a legacy ``params.dill`` may hold such scalars), so a numpy scalar and that Python
    number carry the same information and compare equal; a different value still differs.
    """
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    return value


def _value_change(key: str, a: Any, b: Any, atol: float) -> dict[str, Any] | None:
    """None when ``a`` and ``b`` are equivalent, else one change record (arrays by shape/dtype/max diff)."""
    a, b = python_scalar(a), python_scalar(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return {"key": key, "a": _describe(a), "b": _describe(b), "detail": "array on one side only"}
        if a.shape != b.shape:
            return {"key": key, "a": _describe(a), "b": _describe(b), "detail": f"shape {list(a.shape)} vs {list(b.shape)}"}
        if a.dtype != b.dtype:
            return {"key": key, "a": _describe(a), "b": _describe(b), "detail": f"dtype {a.dtype} vs {b.dtype}"}
        d = max_abs_diff(a, b)
        if d > atol:
            return {"key": key, "a": _describe(a), "b": _describe(b), "detail": f"max abs diff {d:.6g}",
                    "max_abs_diff": _finite_or_none(d)}
        return None
    if type(a) is not type(b):
        return {"key": key, "a": _describe(a), "b": _describe(b),
                "detail": f"type {type(a).__name__} vs {type(b).__name__}"}
    if isinstance(a, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return None
        d = abs(a - b)
        if atol > 0 and d <= atol:
            return None
        return {"key": key, "a": _describe(a), "b": _describe(b), "detail": f"abs diff {d:.6g}",
                "max_abs_diff": _finite_or_none(d)}
    if a == b:
        return None
    return {"key": key, "a": _describe(a), "b": _describe(b), "detail": "values differ"}


def diff_mappings(a: Mapping[str, Any], b: Mapping[str, Any], *, atol: float, prefix: str = "") -> dict[str, Any]:
    """``added``/``removed`` keys and ``changed`` values, recursing into nested dicts with dotted keys."""
    out: dict[str, Any] = {"added": [], "removed": [], "changed": []}
    for key in a:
        if key not in b:
            out["removed"].append(f"{prefix}{key}")
    for key in b:
        if key not in a:
            out["added"].append(f"{prefix}{key}")
    for key in a:
        if key not in b:
            continue
        va, vb = a[key], b[key]
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = diff_mappings(va, vb, atol=atol, prefix=f"{prefix}{key}.")
            for part, items in sub.items():
                out[part].extend(items)
            continue
        if isinstance(va, (list, tuple)) and type(va) is type(vb) and len(va) == len(vb):
            sub = diff_mappings({str(i): x for i, x in enumerate(va)}, {str(i): x for i, x in enumerate(vb)},
                                atol=atol, prefix=f"{prefix}{key}.")
            for part, items in sub.items():
                out[part].extend(items)
            continue
        change = _value_change(f"{prefix}{key}", va, vb, atol)
        if change is not None:
            out["changed"].append(change)
    return out


def diff_models(name: str, a: ModelEntry | None, b: ModelEntry | None, *, atol: float) -> dict[str, Any]:
    """One model: presence, sentinel status, network spec fields and every canonical tensor."""
    out: dict[str, Any] = {
        "name": name, "status": "same", "sentinel": [None if a is None else a.sentinel, None if b is None else b.sentinel],
        "network": [], "missing": [], "extra": [], "shape_mismatch": [], "dtype_mismatch": [], "value_diff": [],
        "compared": 0,
    }
    if a is None or b is None:
        out["status"] = "only in b" if a is None else "only in a"
        return out
    if a.sentinel or b.sentinel:
        sa, sb = a.payload.get("sentinel"), b.payload.get("sentinel")
        if a.sentinel != b.sentinel or sa != sb:
            out["status"] = "changed"
            out["network"].append({"key": "sentinel", "a": _describe(sa if a.sentinel else "weights"),
                                   "b": _describe(sb if b.sentinel else "weights"), "detail": "sentinel placeholder differs"})
        return out
    spec_a = a.spec.to_dict() if a.spec else {}
    spec_b = b.spec.to_dict() if b.spec else {}
    spec = diff_mappings(spec_a, spec_b, atol=0.0)
    out["network"] = spec["changed"] + [{"key": k, "a": None, "b": _describe(spec_b.get(k)), "detail": "added"}
                                        for k in spec["added"]] + [
        {"key": k, "a": _describe(spec_a.get(k)), "b": None, "detail": "removed"} for k in spec["removed"]]
    ia, ib = a.tensor_info, b.tensor_info
    out["missing"] = [n for n in ia if n not in ib]
    out["extra"] = [n for n in ib if n not in ia]
    for tname in ia:
        if tname not in ib:
            continue
        ta, tb = ia[tname], ib[tname]
        if tuple(ta.shape) != tuple(tb.shape):
            out["shape_mismatch"].append({"name": tname, "a": list(ta.shape), "b": list(tb.shape)})
            continue
        if ta.dtype != tb.dtype:
            out["dtype_mismatch"].append({"name": tname, "a": ta.dtype, "b": tb.dtype})
            continue
        d = max_abs_diff(np.asarray(a.tensors[tname]), np.asarray(b.tensors[tname]))
        out["compared"] += 1
        if d > atol:
            out["value_diff"].append({"name": tname, "max_abs_diff": _finite_or_none(d)})
    if any(out[k] for k in ("network", "missing", "extra", "shape_mismatch", "dtype_mismatch", "value_diff")):
        out["status"] = "changed"
    return out


TENSOR_KEYS = ("missing", "extra", "shape_mismatch", "dtype_mismatch", "value_diff")


def weights_summary(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Do the two archives hold the same weights? Over the models holding weights on both sides.

    ``equal`` is None when no model holds weights on both sides (nothing to say about weights).
    """
    both = [m for m in models if m["status"] not in ("only in a", "only in b") and not any(m["sentinel"])]
    differing = sum(len(m[k]) for m in both for k in TENSOR_KEYS)
    compared = sum(m["compared"] for m in both)
    return {"equal": None if not both else differing == 0, "models": [m["name"] for m in both],
            "tensors_compared": compared, "tensors_differing": differing}


def diff_archives(a: BridgeArchive, b: BridgeArchive, *, atol: float = 0.0, tensors_only: bool = False,
                  model: str | None = None) -> dict[str, Any]:
    """The full comparison report; ``equivalent`` is True when nothing differs beyond ``atol``.

    ``tensors_only``: compare canonical tensors only, of the models holding weights on both sides (no
    params, configs, network specs; the others are named in ``scope.not_compared``). ``model``: that model only
    (``KeyError`` when neither archive has it). ``weights`` summarises the tensors either way.
    """
    if not (atol >= 0 and math.isfinite(atol)):
        raise ValueError(f"atol must be a finite number >= 0, got {atol!r}")
    if model is not None and model not in a.models and model not in b.models:
        raise KeyError(model)
    if tensors_only or model is not None:
        return _focused(a, b, atol=atol, tensors_only=tensors_only, model=model)
    header: list[dict[str, Any]] = []
    if a.backend != b.backend:
        header.append({"key": "backend", "a": a.backend, "b": b.backend, "detail": "backends differ"})
    change = _value_change("intensity_scale", a.intensity_scale, b.intensity_scale, atol)
    if change is not None:
        header.append(change)
    params = diff_mappings(a.params, b.params, atol=atol)
    torch_config = diff_mappings(a.torch_config or {}, b.torch_config or {}, atol=atol)
    if (a.torch_config is None) != (b.torch_config is None):
        header.append({"key": "torch_config", "a": "absent" if a.torch_config is None else "present",
                       "b": "absent" if b.torch_config is None else "present", "detail": "torch configs on one side only"})
    models = [diff_models(n, a.models.get(n), b.models.get(n), atol=atol)
              for n in list(a.models) + [n for n in b.models if n not in a.models]]
    differences = (
        len(header)
        + sum(len(params[k]) for k in params)
        + sum(len(torch_config[k]) for k in torch_config)
        + sum(1 for m in models if m["status"] in ("only in a", "only in b"))
        + sum(len(m[k]) for m in models for k in ("network", "missing", "extra", "shape_mismatch", "dtype_mismatch", "value_diff"))
    )
    return {
        "a": {"path": str(a.path), "era": a.era, "backend": a.backend},
        "b": {"path": str(b.path), "era": b.era, "backend": b.backend},
        "atol": atol,
        "equivalent": differences == 0,
        "differences": differences,
        "header": header,
        "params": params,
        "torch_config": torch_config,
        "models": models,
        "weights": weights_summary(models),
        "scope": {"tensors_only": False, "model": None, "not_compared": []},
    }


def _focused(a: BridgeArchive, b: BridgeArchive, *, atol: float, tensors_only: bool, model: str | None) -> dict[str, Any]:
    """``diff --tensors-only`` / ``--model NAME``: the same report shape, restricted."""
    full = diff_archives(a, b, atol=atol)
    models = [m for m in full["models"] if model is None or m["name"] == model]
    empty: dict[str, Any] = {"added": [], "removed": [], "changed": []}
    skipped: list[str] = []
    if tensors_only:
        kept, skipped = [], []
        for m in models:
            m = dict(m, network=[])
            if m["status"] in ("only in a", "only in b") or any(m["sentinel"]):
                skipped.append(m["name"])  # weights on one side only (or a placeholder): nothing to compare
                continue
            m["status"] = "changed" if any(m[k] for k in TENSOR_KEYS) else "same"
            kept.append(m)
        models = kept
    header = [] if tensors_only else list(full["header"])
    params = empty if tensors_only else full["params"]
    torch_config = empty if tensors_only else full["torch_config"]
    differences = (
        len(header) + sum(len(params[k]) for k in params) + sum(len(torch_config[k]) for k in torch_config)
        + sum(1 for m in models if m["status"] in ("only in a", "only in b"))
        + sum(len(m[k]) for m in models for k in ("network",) + TENSOR_KEYS)
    )
    return {**full, "equivalent": differences == 0, "differences": differences, "header": header, "params": params,
            "torch_config": torch_config, "models": models, "weights": weights_summary(models),
            "scope": {"tensors_only": tensors_only, "model": model, "not_compared": skipped}}
