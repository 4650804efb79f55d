"""``inspect``: provenance (source era, conversion and migration choices, tool version), notes vs warnings,
tables that never cut identifiers; ``convert``: backend aliases and refusals that name the alternative;
``validate``: an error names its file once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptycho_bridge import __version__
from ptycho_bridge.cli import main
from ptycho_bridge.schema import schema_errors


@pytest.fixture(scope="module")
def converted(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("conv") / "torch.zip"
    r = CliRunner().invoke(main, ["convert", str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"), "--to", "torch",
                                  "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["to_backend"] == "pytorch"  # the alias is accepted, JSON keeps the full name
    return out


def test_inspect_shows_conversion_and_tool(converted: Path) -> None:
    doc = json.loads(CliRunner().invoke(main, ["inspect", str(converted), "--json"]).stdout)
    assert schema_errors("inspect-report", doc) == []
    assert doc["source_era"] == "tf-modelmanager-1"
    assert doc["conversion"]["from_backend"] == "tensorflow" and doc["conversion"]["to_backend"] == "pytorch"
    assert any(c.startswith("cbam_encoder=False") for c in doc["conversion"]["choices"])
    assert doc["provenance"]["tool"] == "ptycho-bridge" and doc["provenance"]["tool_version"] == __version__
    text = CliRunner().invoke(main, ["inspect", str(converted)]).stdout
    assert "source era       tf-modelmanager-1" in text
    assert f"written by       ptycho-bridge {__version__}" in text
    assert "converted        tensorflow → pytorch" in text
    assert "[num_datasets=1]" in text  # choice text printed as text, not markup


def test_inspect_shows_migration_notes(fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.zip"
    r = CliRunner().invoke(main, ["migrate", str(fixtures_dir / "torch_N64_gs2" / "wts.h5.zip"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).stdout)
    assert schema_errors("inspect-report", doc) == []
    assert doc["conversion"] is None and doc["source_era"] == "torch-bundle-2"
    assert doc["provenance"]["migration"][0].startswith("migrated from torch-bundle-2")
    assert "migration      migrated from torch-bundle-2" in CliRunner().invoke(main, ["inspect", str(out)]).stdout


def test_legacy_archive_has_empty_provenance_and_the_loader_fact_is_a_note(fixtures_dir: Path) -> None:
    arch = str(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip")
    doc = json.loads(CliRunner().invoke(main, ["inspect", arch, "--json"]).stdout)
    assert schema_errors("inspect-report", doc) == []
    assert doc["conversion"] is None and doc["provenance"]["tool"] is None
    assert not [w for w in doc["warnings"] if "intensity_scale" in w]
    assert any("load_inference_bundle_torch" in n for n in doc["notes"])
    text = CliRunner().invoke(main, ["inspect", arch]).stdout
    assert "warning: params.dill" not in text and "note: params.dill says intensity_scale.trainable=True" in text


def test_piped_inspect_never_cuts_identifiers(fixtures_dir: Path) -> None:
    text = CliRunner().invoke(main, ["inspect", str(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip"), "--tensors"]).stdout
    assert "…" not in text
    assert "│ diffraction_to_obj │" in text
    assert "model.autoencoder.encoder.blocks.0.attention" in text  # a torch source name, one line


def test_narrow_terminal_folds_instead_of_truncating() -> None:
    from rich.console import Console

    from ptycho_bridge.cli import tables

    t = tables.table(("canonical name", "shape"))
    name = "model.autoencoder.encoder.blocks.0.attention.ChannelGate.mlp.1.weight"
    t.add_row(name, "(2, 32)")
    con = Console(width=40, record=True, file=open("/dev/null", "w"))
    con.print(t)
    rendered = con.export_text()
    assert "…" not in rendered
    cells = "".join(line.split("│")[1].strip() for line in rendered.splitlines() if line.startswith("│"))
    assert cells == name


def test_convert_aliases_and_refusal_naming_the_alternative(fixtures_dir: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["convert", str(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip"), "--to", "tf",
                                  "-o", str(tmp_path / "x.zip")])
    assert r.exit_code == 1 and not (tmp_path / "x.zip").exists()
    line = r.stderr.strip()
    assert line.startswith("error: cbam_encoder=True: TF has no attention modules")
    assert "export-onnx" in line and "run --engine onnx" in line
    r = CliRunner().invoke(main, ["convert", "x.zip", "--to", "jax", "-o", "y.zip"])
    assert r.exit_code == 2 and "'pytorch', 'tensorflow'" in r.stderr


def test_validate_names_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("fake.zip").write_bytes(b"not a zip at all")
    r = CliRunner().invoke(main, ["validate", "fake.zip"])
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: fake.zip: not a readable zip file (File is not a zip file)"]
