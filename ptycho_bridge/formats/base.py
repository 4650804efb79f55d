"""The era-reader interface and the small helpers every era shares.

Why: readers differ only in where they find things; they share how a member is decoded (bounded
JSON, safe pickle, torch zip) and how a field is required with a precise error. Capability flags
(``can_write``, ``has_checksums``) let callers ask a reader what it can do instead of testing types,
as zarr's ``Store`` does.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import FormatError, PickleDecodeError, SpecError
from ptycho_bridge.io.safepickle import decode, find_opaque, load_inert
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.lazy import is_loaded
from ptycho_bridge.model import BridgeArchive

MAX_JSON_BYTES = 32 * 1024 * 1024
MAX_PICKLE_BYTES = 256 * 1024 * 1024
MAX_JSON_INT_DIGITS = 40
# sane ranges for decoded network parameters (issue 12): far above anything upstream trains
MAX_GRIDSIZE = 16
MAX_FILTERS_SCALE = 64


class EraReader(ABC):
    """Reads one archive era into a :class:`BridgeArchive`."""

    era: ClassVar[str]
    backend: ClassVar[str]
    can_write: ClassVar[bool] = False
    has_checksums: ClassVar[bool] = False
    # the root manifest.dill "version" this era writes (legacy pickled eras only)
    legacy_manifest_version: ClassVar[str | None] = None

    def __init__(self, *, verify: bool = True, lazy_arrays: bool = False) -> None:
        # eras with checksums verify the bytes they hand out (docs/security.md); the rest ignore it
        self.verify = verify
        # arrays in params (the probe) as DeferredArray, built only if used: ``inspect`` reports their
        # shape and dtype and never their values, so it reads an archive without numpy (issue 16)
        self.lazy_arrays = lazy_arrays

    @classmethod
    @abstractmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        """Whether this reader recognises the container (``hints`` caches decoded manifests)."""

    @abstractmethod
    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        """The neutral archive; tensors may be loaded lazily. ``hints`` is what :meth:`detect` cached
        (decoded manifests), so a manifest is decoded once per open; ``None`` reads afresh."""


def read_json(zf: SafeZip, name: str, *, raw: bytes | None = None) -> Any:
    """A bounded JSON member, parsed strictly (no NaN literals, no duplicate keys).

    ``raw``: the member's bytes when the caller has read them already (held to the same bound, not read again)."""
    if raw is None:
        raw = zf.read(name, max_size=MAX_JSON_BYTES)
    else:
        zf.check_size(name, len(raw), MAX_JSON_BYTES)
    where = zf.member_label(name)

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise FormatError(f"duplicate JSON key {key!r}", member=where)
            out[key] = value
        return out

    def no_constants(token: str) -> Any:
        raise FormatError(f"non-standard JSON constant {token}", member=where)

    def bounded_int(token: str) -> int:
        if len(token) > MAX_JSON_INT_DIGITS:  # int() of > 4,300 digits raises ValueError; none are meaningful
            raise FormatError(f"JSON integer of {len(token)} digits (limit {MAX_JSON_INT_DIGITS})", member=where)
        return int(token)

    def finite_float(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):  # 1e400 parses as inf
            raise FormatError(f"JSON number {token[:40]} overflows to infinity", member=where)
        return value

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_dupes, parse_constant=no_constants,
                          parse_int=bounded_int, parse_float=finite_float)
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text (expected JSON)", member=where) from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", member=where) from None
    except RecursionError:
        raise FormatError("JSON nested too deeply", member=where) from None


def cached_json(zf: SafeZip, name: str, hints: dict[str, Any] | None) -> Any:
    """:func:`read_json` of ``name``, decoded once per open archive (cached in ``hints``)."""
    if hints is None:
        return read_json(zf, name)
    if name not in hints:
        hints[name] = read_json(zf, name)
    return hints[name]


def require_model_names(models: list[Any], *, member: str) -> list[str]:
    """A manifest's ``models``: a non-empty list of plain names (no ``/``, no ``..``)."""
    if not models or not all(isinstance(m, str) and m and "/" not in m and ".." not in m for m in models):
        raise FormatError(f"models must be a non-empty list of names, found {models!r}"[:200], member=member, field="models")
    return list(models)


def read_pickle(zf: SafeZip, name: str, *, defer_arrays: bool = False) -> Any:
    """A pickle/dill member decoded to plain data by the safe reader (nothing imported or called);
    ``defer_arrays``: arrays as :class:`~ptycho_bridge.io.deferred.DeferredArray` (``EraReader.lazy_arrays``)."""

    where = zf.member_label(name)
    data = zf.read(name, max_size=MAX_PICKLE_BYTES)
    return decode(load_inert(data, member=where), member=where, defer_arrays=defer_arrays)


def opaque_names(value: Any) -> list[str]:

    return sorted(set(find_opaque(value)))


def require_dict(value: Any, *, member: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{what} must be a dict, found {type_name(value)}", member=member)
    return value


def type_name(value: Any) -> str:
    tn = getattr(value, "type_name", None)
    if isinstance(tn, str):
        return f"unknown pickle global {tn}"
    return type(value).__name__


def require_field(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], *, member: str) -> Any:
    """``mapping[key]`` of the given type, or a FormatError naming member, field and expectation.

    Where ``float`` is accepted, a numpy floating scalar (``numpy.float32``, as upstream's savers
    pickle ``intensity_scale`` in some eras) is accepted too and returned as a Python ``float``.
    """
    if key not in mapping:
        raise FormatError(f"required field {key!r} is missing", member=member, field=key)
    value = mapping[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and is_loaded("numpy") and isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        expected = "/".join(k.__name__ for k in kinds)
        if getattr(value, "type_name", None):
            raise PickleDecodeError(
                f"field holds {type_name(value)}, expected {expected}; it was not executed",
                member=member,
                field=key,
            )
        raise FormatError(f"expected {expected}, found {type_name(value)} {shown(value)}", member=member, field=key)
    return value


def shown(value: Any, limit: int = 80) -> str:
    """A bounded, never-failing description of a decoded value for error messages.

    ``repr`` of an int over 4,300 digits raises ValueError and ``repr`` of an array can be huge, so
    error messages about untrusted values go through here.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if is_loaded("numpy") and isinstance(value, np.ndarray):
        return f"an array {value.dtype}{list(value.shape)}"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a describing helper must not fail
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _wrong(value: Any, expected: str, *, member: str, field: str) -> FormatError:
    if getattr(value, "type_name", None):
        return PickleDecodeError(f"field holds {type_name(value)}, expected {expected}; it was not executed",
                                 member=member, field=field)
    return FormatError(f"expected {expected}, found {type_name(value)} {shown(value)}", member=member, field=field)


def require_int(value: Any, *, member: str, field: str, min: int | None = None, max: int | None = None) -> int:
    """A decoded integer: an ``int`` (or numpy integer), never a bool, float, string or array, within bounds.

    Why: the typed accessor every decoded integer goes through (issue 12): ``int(x)`` on a decoded
    value turns ``64.0``, ``"64"``, ``True`` or a one-element array into 64 or raises
    ValueError/TypeError/OverflowError deep inside a reader; here it is a :class:`FormatError`
    naming the member and field.
    """
    if is_loaded("numpy") and isinstance(value, np.integer) and not isinstance(value, np.bool_):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(value, "an integer", member=member, field=field)
    if (min is not None and value < min) or (max is not None and value > max):
        raise FormatError(f"expected an integer in [{min}, {max}], found {shown(value)}", member=member, field=field)
    return value


def require_float(value: Any, *, member: str, field: str, finite: bool = True, positive: bool = False,
                  min: float | None = None, max: float | None = None) -> float:
    """A decoded real number (int or float, never a bool, string or array) as a float, finite unless told."""
    if is_loaded("numpy") and isinstance(value, (np.integer, np.floating)) and not isinstance(value, np.bool_):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(value, "a number", member=member, field=field)
    try:
        number = float(value)
    except OverflowError:
        raise FormatError(f"number {shown(value)} is out of range", member=member, field=field) from None
    if finite and not math.isfinite(number):
        raise FormatError(f"expected a finite number, found {shown(value)}", member=member, field=field)
    if positive and not number > 0:
        raise FormatError(f"expected a positive finite number, found {shown(value)}", member=member, field=field)
    if (min is not None and number < min) or (max is not None and number > max):
        raise FormatError(f"expected a number in [{min}, {max}], found {shown(value)}", member=member, field=field)
    return number


def require_bool(value: Any, *, member: str, field: str) -> bool:
    """A decoded flag: ``True``/``False`` (or a numpy bool), never 0/1, a string or an array."""
    if is_loaded("numpy") and isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, bool):
        raise _wrong(value, "true/false", member=member, field=field)
    return value


def require_str(value: Any, *, member: str, field: str) -> str:
    """A decoded string (``str`` only)."""
    if not isinstance(value, str):
        raise _wrong(value, "a string", member=member, field=field)
    return value


def positive_float(value: Any, *, member: str, field: str) -> float:
    return require_float(value, member=member, field=field, positive=True)


def require_agree(field: str, a_name: str, a: Any, b_name: str, b: Any, member: str) -> None:
    """Two sources that speak about one field must agree; else a :class:`SpecError` naming both."""
    if a != b:
        raise SpecError(f"{a_name} says {a!r} but {b_name} says {b!r}", member=member, field=field)
