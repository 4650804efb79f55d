"""The JSON Schemas in ``schemas/``, the ``schema`` / ``sample`` commands, and docs ↔ schema agreement."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.errors import SchemaError
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.ops.sample import write_sample
from ptycho_bridge.schema import (
    SCHEMA_FILES,
    load_schema,
    schema_errors,
    schema_names,
    validate,
)
from tests._support import (
    REPO,  # noqa: E402
    read_member,
    rewrite_zip,
)

SCHEMA_DIR = REPO / "schemas"
DOC = REPO / "docs" / "archive-format.md"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def run_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def schema_version(name: str) -> tuple[int, int, int]:
    m = re.fullmatch(rf"https://[^/]+/schemas/{re.escape(name)}/(\d+)\.(\d+)\.(\d+)", load_schema(name)["$id"])
    assert m, load_schema(name)["$id"]
    return int(m[1]), int(m[2]), int(m[3])


# ---------------------------------------------------------------------------------------------------
# The schema files
# ---------------------------------------------------------------------------------------------------
def test_every_schema_file_is_registered() -> None:
    on_disk = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    assert on_disk == sorted(SCHEMA_FILES.values())
    assert schema_names() == sorted(SCHEMA_FILES)


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_is_valid_draft_2020_12_with_versioned_id(name: str) -> None:
    raw = json.loads((SCHEMA_DIR / SCHEMA_FILES[name]).read_text())
    Draft202012Validator.check_schema(raw)
    assert raw["$schema"] == DRAFT
    assert load_schema(name) == raw  # the loader reads the same file
    schema_version(name)
    assert raw.get("title") and raw.get("type") == "object"


def test_format_versions_match_schema_ids(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "wts.h5.zip")
    manifest = json.loads(read_member(path, "manifest.json"))
    params = json.loads(read_member(path, "params.json"))
    assert tuple(int(x) for x in manifest["format_version"].split(".")) == schema_version("manifest")
    assert tuple(int(x) for x in params["format_version"].split(".")) == schema_version("params")


# ---------------------------------------------------------------------------------------------------
# `ptycho-bridge schema`
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_command_prints_the_file(name: str) -> None:
    result = run_cli("schema", name)
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout) == json.loads((SCHEMA_DIR / SCHEMA_FILES[name]).read_text())


def test_schema_list_and_unknown() -> None:
    result = run_cli("schema", "--list")
    assert result.exit_code == 0 and result.stdout.split() == sorted(SCHEMA_FILES)
    result = run_cli("schema", "no-such-schema")
    assert result.exit_code == 2
    assert "no-such-schema" in result.stderr and "manifest" in result.stderr
    with pytest.raises(KeyError, match="unknown schema"):
        load_schema("no-such-schema")


# ---------------------------------------------------------------------------------------------------
# The deterministic sample
# ---------------------------------------------------------------------------------------------------
def test_sample_validates_and_is_deterministic(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a.zip")
    b = write_sample(tmp_path / "b.zip")
    manifest = json.loads(read_member(a, "manifest.json"))
    assert schema_errors("manifest", manifest) == []
    assert schema_errors("params", json.loads(read_member(a, "params.json"))) == []
    for member in manifest["members"]:
        assert read_member(a, member) == read_member(b, member), member
    other = json.loads(read_member(b, "manifest.json"))
    assert {k: v for k, v in manifest.items() if k != "created"} == {k: v for k, v in other.items() if k != "created"}
    report = validate_path(a)
    assert report["valid"] is True and report["era"] == "bridge-2"
    assert {c["check"]: c["ok"] for c in report["checks"]} == {
        "container": True, "schema": True, "structure": True, "spec": True, "checksums": True}


def test_sample_command(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    result = run_cli("sample", "-o", out)
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == out / "wts.h5.zip" and path.is_file()
    assert run_cli("validate", out).exit_code == 0
    again = run_cli("sample", "-o", out)  # refuses to overwrite without --force
    assert again.exit_code == 1
    lines = again.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert run_cli("sample", "-o", out, "--force").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["dataset.npz", "wts.h5.zip"]  # the scan beside it; no temp files


# ---------------------------------------------------------------------------------------------------
# Every error, best match first
# ---------------------------------------------------------------------------------------------------
def _broken_manifest(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    sample = write_sample(tmp_path / "sample.zip")
    manifest = json.loads(read_member(sample, "manifest.json"))
    del manifest["backend"]
    del manifest["created_by"]
    first_tensor = next(iter(manifest["models"]["diffraction_to_obj"]["tensors"].values()))
    first_tensor["sha256"] = "not-a-sha"
    return sample, manifest


def test_all_schema_errors_best_match_first(tmp_path: Path) -> None:
    _, manifest = _broken_manifest(tmp_path)
    errors = schema_errors("manifest", manifest)
    assert len(errors) == 3
    assert any("'backend' is a required property" in e for e in errors)
    assert any("'created_by' is a required property" in e for e in errors)
    assert any("not-a-sha" in e and "sha256" in e for e in errors)
    best = best_match(Draft202012Validator(load_schema("manifest")).iter_errors(manifest))
    assert errors[0] == f"{best.json_path}: {best.message}"
    with pytest.raises(SchemaError) as err:
        validate("manifest", manifest, member="wts.h5.zip:manifest.json")
    assert err.value.errors == errors
    assert str(err.value).startswith("wts.h5.zip:manifest.json: fails schema 'manifest': ")
    assert "(+2 more)" in str(err.value)


def test_reader_reports_every_schema_error(tmp_path: Path) -> None:
    sample, manifest = _broken_manifest(tmp_path)
    bad = rewrite_zip(sample, tmp_path / "bad.zip", replace={"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(SchemaError) as err:
        read_archive(bad)
    assert len(err.value.errors) == 3 and err.value.member == "bad.zip:manifest.json"
    report = validate_path(bad)
    assert report["valid"] is False
    assert [c for c in report["checks"] if c["check"] == "schema"][0]["ok"] is False


def test_reports_validate_against_their_schemas(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "wts.h5.zip")
    inspect = run_cli("inspect", "--json", "--tensors", sample)
    assert schema_errors("inspect-report", json.loads(inspect.stdout)) == []
    validated = run_cli("validate", "--json", sample, tmp_path / "absent.zip")
    assert validated.exit_code == 1
    doc = json.loads(validated.stdout)
    assert schema_errors("validate-report", doc) == []
    assert [a["valid"] for a in doc["archives"]] == [True, False]


# ---------------------------------------------------------------------------------------------------
# docs/archive-format.md ↔ schemas/manifest.schema.json
# ---------------------------------------------------------------------------------------------------
def _doc_tables() -> dict[str, dict[str, str]]:
    """Section heading → {backticked field name in the first column: rest of the row}."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = {}
            continue
        m = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)$", line)
        if m and current is not None:
            sections[current][m[1]] = m[2]
    return sections


def _section(tables: dict[str, dict[str, str]], prefix: str) -> dict[str, str]:
    found = [rows for title, rows in tables.items() if title.startswith(prefix)]
    assert len(found) == 1, f"no single section {prefix!r} in {DOC.name}"
    return found[0]


@pytest.mark.skipif(not DOC.exists(), reason="docs/archive-format.md not written yet")
def test_docs_name_the_same_manifest_fields_as_the_schema() -> None:
    schema = load_schema("manifest")
    tables = _doc_tables()
    model = schema["$defs"]["model"]
    pairs = [
        ("2.", schema["properties"], set(schema["required"])),
        ("3.", model["properties"], set(model["required"]) | set(model["else"]["required"])),
        ("4.", schema["$defs"]["network"]["properties"], set(schema["$defs"]["network"]["required"])),
    ]
    for prefix, properties, required in pairs:
        rows = _section(tables, prefix)
        assert set(rows) == set(properties), f"§{prefix} docs vs schema: {set(rows) ^ set(properties)}"
        optional = {name for name, rest in rows.items() if "OPTIONAL" in rest}
        assert optional == set(properties) - required, f"§{prefix} OPTIONAL fields differ from the schema"


@pytest.mark.skipif(not DOC.exists(), reason="docs/archive-format.md not written yet")
def test_docs_quote_the_schema_versions() -> None:
    text = DOC.read_text(encoding="utf-8")
    major, minor, patch = schema_version("manifest")
    assert f"Version {major}.{minor}.{patch}." in text
    assert f"/schemas/manifest/{major}.{minor}.{patch}`" in text
