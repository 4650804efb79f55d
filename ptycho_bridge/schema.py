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


@lru_cache(maxsize=None)
def _validator(name: str):  # type: ignore[no-untyped-def]
    from jsonschema import Draft202012Validator

    # no ``check_schema`` here: checking a shipped schema against the meta-schema cost 45-75 ms per
    # process on the first bridge-2 read (docs/performance.md); tests/test_schema.py checks every
    # shipped schema once instead
    return Draft202012Validator(inline_refs(load_schema(name)))


def schema_errors(name: str, document: Any) -> list[str]:
    """Every violation as ``"<json path>: <message>"``, best match first."""
    from jsonschema.exceptions import best_match, relevance

    validator = _validator(name)
    errors = sorted(validator.iter_errors(document), key=relevance, reverse=True)
    if not errors:
        return []
    best = best_match(errors)
    ordered = [best] + [e for e in errors if e is not best]
    return [f"{e.json_path}: {e.message}" for e in ordered]


def validate(name: str, document: Any, *, member: str | None = None) -> None:
    """Raise :class:`SchemaError` carrying every error if ``document`` fails schema ``name``."""
    errors = schema_errors(name, document)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SchemaError(f"fails schema {name!r}: {errors[0]}{more}", member=member, errors=errors)
