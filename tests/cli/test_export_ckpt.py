"""``ptycho-bridge export-ckpt``: the Ptychodus fixture, its bridge-2 migration, the TF refusal, parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converters.pytorch.torchzip import load_torch_zip
from ptycho_bridge.cli import main
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.schema import schema_errors


def _decode(path: Path) -> dict:
    with SafeZip(path.read_bytes(), label=path.name) as zf:
        return load_torch_zip(zf)


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def _assert_same_checkpoint_content(ours: Path, ref: Path) -> None:
    a, b = _decode(ours), _decode(ref)
    assert list(a["state_dict"]) == list(b["state_dict"])
    for key, value in b["state_dict"].items():
        assert a["state_dict"][key].dtype == value.dtype and np.array_equal(a["state_dict"][key], value), key
    assert repr(a["hyper_parameters"]) == repr(b["hyper_parameters"])
    ra, rb = read_archive(ours), read_archive(ref)
    assert ra.primary.spec == rb.primary.spec
    assert ra.primary.tensors.keys() == rb.primary.tensors.keys()
    assert all(np.array_equal(ra.primary.tensors[k], v) for k, v in rb.primary.tensors.items())


def test_export_the_fixture_and_its_migration(ptychodus_case: Path, tmp_path: Path) -> None:
    src = ptychodus_case / "model.ckpt"
    out = tmp_path / "model.ckpt"
    result = _run("export-ckpt", str(src), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert schema_errors("export-ckpt-report", doc) == []
    assert doc["variant"] == "torchapi-devel" and doc["n_tensors"] == 61 and doc["notes"] == []
    _assert_same_checkpoint_content(out, src)

    migrated = tmp_path / "m.zip"
    assert _run("migrate", str(src), "-o", str(migrated)).exit_code == 0
    again = tmp_path / "again.ckpt"
    result = _run("export-ckpt", str(migrated), "-o", str(again))
    assert result.exit_code == 0, result.output
    _assert_same_checkpoint_content(again, src)
    # an existing output is kept without --force, replaced with it
    result = _run("export-ckpt", str(src), "-o", str(again))
    assert result.exit_code == 1 and "exists" in result.stderr
    assert _run("export-ckpt", str(src), "-o", str(again), "--force").exit_code == 0


def test_tf_gs2_is_refused_naming_outer_mask(fixtures_dir: Path, tmp_path: Path) -> None:
    """TF masks the probe_big outer branch to the border (1 − M); torchapi-devel adds it over the whole
    patch: no weights make one the other, so the checkpoint is refused (convert to main torch works)."""
    out = tmp_path / "tf.ckpt"
    result = _run("export-ckpt", str(fixtures_dir / "tf_N64_gs2" / "wts.h5.zip"), "-o", str(out))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: outer_mask=True") and "border mask" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_parity_on_the_checkpoint_runs_torch_and_onnx(ptychodus_case: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    result = _run("parity", str(ptychodus_case / "model.ckpt"), "--engines", "torch,onnx",
                  "--input", str(ptychodus_case / "forward_golden.npz"), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert schema_errors("parity-report", doc) == []
    assert {r["engine"] for r in doc["engines"]["ran"]} == {"torch", "onnx"} and doc["engines"]["skipped"] == []
    golden = [c for c in doc["comparisons"] if c["reference"] == "golden"]
    assert {c["actual"] for c in golden} == {"torch", "onnx"}
    for c in golden:
        for region in c["regions"].values():
            assert region["max_abs_err"] <= 1e-5 * region["max_ref"]
