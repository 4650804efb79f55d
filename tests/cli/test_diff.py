"""``diff``: the weights line first, ``--tensors-only`` and ``--model``; identifiers never cut."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.schema import schema_errors


def test_bundle_vs_lightning_ckpt_tensors_only_is_equal(fixtures_dir: Path) -> None:
    d = fixtures_dir / "torch_N64_gs1"
    a, b = str(d / "wts.h5.zip"), str(d / "lightning.ckpt")
    full = CliRunner().invoke(main, ["diff", a, b])
    assert full.exit_code == 1
    assert full.stdout.splitlines()[0] == "weights: equal (63 tensors bit-identical; models diffraction_to_obj)"
    r = CliRunner().invoke(main, ["diff", a, b, "--tensors-only"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("weights: equal (63 tensors")
    assert "params" not in r.stdout
    doc = json.loads(CliRunner().invoke(main, ["diff", a, b, "--tensors-only", "--json"]).stdout)
    assert schema_errors("diff-report", doc) == []
    assert doc["equivalent"] and doc["weights"]["equal"] and doc["scope"]["tensors_only"]


def test_model_option_focuses_on_one_model(fixtures_dir: Path) -> None:
    a = str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    b = str(fixtures_dir / "tf_N64_gs2" / "wts.h5.zip")
    doc = json.loads(CliRunner().invoke(main, ["diff", a, b, "--model", "diffraction_to_obj", "--json"]).stdout)
    assert schema_errors("diff-report", doc) == []
    assert [m["name"] for m in doc["models"]] == ["diffraction_to_obj"]
    assert doc["weights"]["equal"] is False
    r = CliRunner().invoke(main, ["diff", a, b, "--model", "nope"])
    assert r.exit_code == 2 and "no model 'nope'" in r.stderr


def test_piped_diff_never_cuts_values_or_names(fixtures_dir: Path) -> None:
    a = str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    b = str(fixtures_dir / "tf_N64_gs2" / "wts.h5.zip")
    r = CliRunner().invoke(main, ["diff", a, b])
    assert "…" not in r.stdout
    assert "training_outputs/tf_N64_gs1" in r.stdout and "phase.decoder.0.conv1.weight" in r.stdout
    assert r.stdout.splitlines()[0].startswith("weights: DIFFER")
