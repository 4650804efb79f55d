"""The JSON Schemas in ``schemas/``: where they live, and validation that reports every error.

Why: ``schemas/`` is the single source (shipped inside the wheel as ``ptycho_bridge/schemas``); docs
and tests read the same files. Validation uses ``Draft202012Validator`` and returns *every* error,
best match first, each with its JSON path, so a user can fix a manifest in one pass.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ptycho_bridge.errors import SchemaError

SCHEMA_FILES = {
    "manifest": "manifest.schema.json",
    "params": "params.schema.json",
    "inspect-report": "inspect-report.schema.json",
    "validate-report": "validate-report.schema.json",
    "diff-report": "diff-report.schema.json",
    "parity-report": "parity-report.schema.json",
    "export-ckpt-report": "export-ckpt-report.schema.json",
    "pack-report": "pack-report.schema.json",
    "reconstruct-report": "reconstruct-report.schema.json",
}


def schema_dir() -> Path:
    """``ptycho_bridge/schemas`` inside an installed wheel, else the repository's ``schemas/``."""
    packaged = resources.files("ptycho_bridge") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "schemas"


def schema_names() -> list[str]:
    return sorted(SCHEMA_FILES)


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """One schema as a dict; ``KeyError`` listing the known names otherwise."""
    if name not in SCHEMA_FILES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(schema_names())}")
    with open(schema_dir() / SCHEMA_FILES[name], encoding="utf-8") as fh:
        return json.load(fh)


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with local ``#/$defs/<name>`` references replaced by the definition itself.

    Why: jsonschema resolves each ``$ref`` on every visit, which is ~30 % of validating a manifest
    with dozens of tensor entries (``docs/performance.md``). Inlining validates exactly the same
    documents with the same messages; a recursive reference (params values) stays a ``$ref`` (the
    ``$defs`` stay in the root), and annotation keywords beside a ``$ref`` are merged in.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, expanding: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs and ref[8:] not in expanding:
                target = walk(defs[ref[8:]], expanding + (ref[8:],))
                rest = {k: walk(v, expanding) for k, v in node.items() if k != "$ref"}
                if set(rest) & set(target):
                    return {"allOf": [target], **rest}
                return {**target, **rest}
            return {k: walk(v, expanding) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, expanding) for v in node]
        return node

    return {k: (v if k == "$defs" else walk(v, ())) for k, v in schema.items()}


# Schemas of archive members (untrusted text), which get the strict second pass of :func:`text_errors`.
ARCHIVE_SCHEMAS = ("manifest", "params")


@lru_cache(maxsize=None)
def _validator(name: str):  # type: ignore[no-untyped-def]
    """Draft 2020-12, except that ``"integer"`` means a JSON integer: ``64.0`` is not one.

    Why: the draft counts any number with a zero fraction as an integer, so ``"N": 64.0`` and
    ``"shape": [32.0, …]`` passed the schema and failed later in ``reshape`` (issue 12).
    """
    from jsonschema import Draft202012Validator, validators

    # no ``check_schema`` here: checking a shipped schema against the meta-schema cost 45-75 ms per
    # process on the first bridge-2 read (docs/performance.md); tests/test_schema.py checks every
    # shipped schema once instead
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    return strict(inline_refs(load_schema(name)))


def text_errors(document: Any) -> list[str]:
    """Control characters and lone surrogates in any key or string, as ``"<json path>: <message>"``.

    Why: JSON Schema patterns are ECMA-262, and ``^…$`` in Python's ``re`` matches before a trailing
    newline, so ``"2.0.0\\n"`` and ``"diffraction_to_obj\\n"`` passed their patterns; a lone
    surrogate (``"\\ud800"``) is valid JSON but not text. Archive JSON never needs either.
    """
    errors: list[str] = []
    todo: list[tuple[str, Any]] = [("$", document)]
    while todo and len(errors) < 20:
        path, node = todo.pop()
        texts: list[tuple[str, str]] = []
        if isinstance(node, dict):
            for key, value in node.items():
                texts.append((f"{path} key", key))
                todo.append((f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]", value))
        elif isinstance(node, list):
            todo.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, str):
            texts.append((path, node))
        for where, text in texts:
            if text.isprintable():
                continue
            for ch in text:
                if 0xD800 <= ord(ch) <= 0xDFFF:
                    errors.append(f"{where}: lone surrogate U+{ord(ch):04X} in a string")
                    break
                if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
                    errors.append(f"{where}: control character U+{ord(ch):04X} in a string")
                    break
    return errors


def schema_errors(name: str, document: Any) -> list[str]:
    """Every violation as ``"<json path>: <message>"``, best match first."""
    from jsonschema.exceptions import best_match, relevance

    validator = _validator(name)
    errors = sorted(validator.iter_errors(document), key=relevance, reverse=True)
    extra = text_errors(document) if name in ARCHIVE_SCHEMAS else []
    if not errors:
        return extra
    best = best_match(errors)
    ordered = [best] + [e for e in errors if e is not best]
    return [f"{e.json_path}: {e.message}" for e in ordered] + extra


def validate(name: str, document: Any, *, member: str | None = None) -> None:
    """Raise :class:`SchemaError` carrying every error if ``document`` fails schema ``name``."""
    errors = schema_errors(name, document)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaError(f"fails schema {name!r}: {errors[0]}{more}", member=member, errors=errors)
