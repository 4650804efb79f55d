"""``ptycho-bridge parity``: engines agree with each other and with upstream's goldens; perturbations fail.

Goldens are upstream's outputs (fixtures), so a pass here is agreement with upstream, not with this
code. The perturbed archive is a bridge-2 copy of a fixture with one tensor shifted by +1e-2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.ops.parity import compare
from ptycho_bridge.schema import schema_errors

CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1", "torch_N64_gs1", "torch_N64_gs2")
PERTURBED_TENSOR = "amp.conv1.bias"


def _parity(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["parity", *args, "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    doc = json.loads(result.stdout)
    assert schema_errors("parity-report", doc) == []
    return result.exit_code, doc


@pytest.mark.parametrize("case", CASES)
def test_all_engines_match_golden(fixtures_dir: Path, case: str) -> None:
    d = fixtures_dir / case
    engines = "onnx,torch,keras" if case.startswith("tf_") else "onnx,torch"
    code, doc = _parity(str(d / "wts.h5.zip"), "--engines", engines, "--input", str(d / "golden.npz"))
    assert code == 0, [c for c in doc["comparisons"] if not c["ok"]]
    ran = {r["engine"] for r in doc["engines"]["ran"]}
    assert ran == set(engines.split(",")) and doc["engines"]["skipped"] == []
    assert doc["input"]["expected_output"] == ("trimmed" if case.startswith("tf_") else "per-patch")
    golden = [c for c in doc["comparisons"] if c["reference"] == "golden"]
    assert {c["actual"] for c in golden} == ran
    for c in golden:
        for region in c["regions"].values():
            assert region["max_abs_err"] <= 1e-5 * region["max_ref"] + 1e-5 * region["max_ref"]


def _perturbed_copy(src: Path, dst: Path, delta: float = 1e-2) -> Path:
    arch = read_archive(src)
    entry = arch.primary
    tensors = {k: np.array(entry.tensors[k]) for k in entry.tensors}
    tensors[PERTURBED_TENSOR] = (tensors[PERTURBED_TENSOR] + np.float32(delta)).astype(np.float32)
    return write_archive(
        dst, backend=arch.backend, source_era=arch.era,
        models={"diffraction_to_obj": ModelToWrite(entry.spec, tensors)},
        params=arch.params, intensity_scale=arch.intensity_scale, torch_config=arch.torch_config,
    )


def test_perturbed_tensor_fails_against_golden_and_original(fixtures_dir: Path, tmp_path: Path) -> None:
    d = fixtures_dir / "tf_N64_gs2"
    bad = _perturbed_copy(d / "wts.h5.zip", tmp_path / "bad.zip")
    code, doc = _parity(str(bad), "--engines", "onnx,torch", "--input", str(d / "golden.npz"))
    assert code == 1 and not doc["ok"]
    failed = {(c["reference"], c["actual"]) for c in doc["comparisons"] if not c["ok"]}
    assert failed == {("golden", "onnx"), ("golden", "torch")}  # engines still agree with each other
    worst = max(r["max_abs_err"] / r["max_ref"] for c in doc["comparisons"] if not c["ok"]
                for r in c["regions"].values())
    assert worst > 1e-4

    # two archives: original vs perturbed, same engine on both → that pair fails, and says how much
    code, doc = _parity(str(d / "wts.h5.zip"), str(bad), "--engines", "onnx", "--random", "--batch", "2")
    assert code == 1
    (cmp,) = doc["comparisons"]
    assert (cmp["reference"], cmp["actual"], cmp["ok"]) == ("A:onnx", "B:onnx", False)
    assert cmp["regions"]["centre"]["max_abs_err"] > 1e-4 * cmp["regions"]["centre"]["max_ref"]

    human = CliRunner().invoke(main, ["parity", str(d / "wts.h5.zip"), str(bad), "--engines", "onnx", "--random"])
    assert human.exit_code == 1
    assert "B:onnx vs A:onnx" in human.stderr and "max abs err" in human.stderr


def test_identical_copy_passes_across_archives(fixtures_dir: Path, tmp_path: Path) -> None:
    d = fixtures_dir / "torch_N64_gs1"
    same = _perturbed_copy(d / "wts.h5.zip", tmp_path / "same.zip", delta=0.0)
    code, doc = _parity(str(d / "wts.h5.zip"), str(same), "--engines", "onnx,torch", "--input", str(d / "golden.npz"))
    assert code == 0
    labels = {(c["reference"], c["actual"]) for c in doc["comparisons"]}
    assert ("A:onnx", "B:onnx") in labels and ("A:torch", "B:torch") in labels and ("A:onnx", "A:torch") in labels


def test_mismatched_archives_are_refused(fixtures_dir: Path) -> None:
    result = CliRunner().invoke(main, ["parity", str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"),
                                       str(fixtures_dir / "tf_N64_gs2" / "wts.h5.zip"), "--random", "--engines", "onnx"])
    assert result.exit_code == 1 and "cannot be compared" in result.stderr


def test_usage_errors(fixtures_dir: Path) -> None:
    arch = str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    assert CliRunner().invoke(main, ["parity", arch]).exit_code == 2  # neither --input nor --random
    bad = CliRunner().invoke(main, ["parity", arch, "--random", "--engines", "onnx,jax"])
    assert bad.exit_code == 2 and "jax" in bad.output


def test_compare_rule_is_elementwise_and_per_region() -> None:
    N = 8
    ref = np.ones((1, 1, N, N), np.complex64)
    ref[..., :2, :] = 1000.0  # border rows, ×1000 like TF's probe.big border
    act = ref.copy()
    act[0, 0, 4, 4] += np.float32(1.5e-5)  # centre allows atol (1e-5·max|ref| = 1e-5) + rtol·|ref| (1e-5)
    r = compare(act, ref)
    assert r["ok"] and r["regions"]["centre"]["max_abs_err"] == pytest.approx(1.5e-5, rel=0.1)
    act[0, 0, 4, 4] += np.float32(1.5e-5)  # 3e-5 > 2e-5 → centre fails although tiny next to the border's scale
    r = compare(act, ref)
    assert not r["ok"] and not r["regions"]["centre"]["ok"] and r["regions"]["border"]["ok"]
    act = ref.copy()
    act[0, 0, 0, 0] = np.nan
    assert not compare(act, ref)["regions"]["border"]["ok"]


def test_requested_engine_that_cannot_run_is_an_error(fixtures_dir: Path) -> None:
    """The Keras network has no CBAM: named in --engines it fails the run (exit 1, reason given), not a skip."""
    d = fixtures_dir / "torch_N64_gs1"
    code, doc = _parity(str(d / "wts.h5.zip"), "--engines", "onnx,keras", "--random", "--batch", "1")
    assert code == 1 and doc["ok"] is False
    (skip,) = doc["engines"]["skipped"]
    assert skip["engine"] == "keras" and "CBAM" in skip["reason"]
    assert any("requested engine keras cannot run" in n for n in doc["notes"])
    result = CliRunner().invoke(main, ["parity", str(d / "wts.h5.zip"), "--engines", "onnx,keras", "--random"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("error: requested engine keras cannot run")
    assert lines[-1] == "0 passed, 0 failed"  # the verdict line comes last
