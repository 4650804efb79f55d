"""Tests for ``ptycho-bridge diff`` (ptycho_bridge/ops/diff.py, ptycho_bridge/cli/diff.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge import read_archive, schema_errors
from ptycho_bridge.cli import main
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.ops.diff import max_abs_diff
from ptycho_bridge.ops.sample import sample_params, sample_tensors, write_sample
from ptycho_bridge.spec.network import tf_padded_size, tf_spec


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _diff_json(a: Path, b: Path, *extra: str) -> tuple[int, dict]:
    code, out, err = _cli("diff", str(a), str(b), "--json", *extra)
    assert code in (0, 1), err
    doc = json.loads(out)
    assert schema_errors("diff-report", doc) == []
    return code, doc


def _sample_variant(path: Path, *, tensor_delta: dict[str, float] | None = None, extra_params: dict | None = None,
                    drop_params: tuple[str, ...] = (), scale: float | None = None) -> Path:
    """The sample archive with chosen edits, written independently of write_sample's own choices."""
    params = sample_params()
    for key in drop_params:
        params.pop(key)
    params.update(extra_params or {})
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                   amp_activation="sigmoid", padded_size=tf_padded_size(64, 1, 4, 10))
    tensors = sample_tensors(spec)
    for name, delta in (tensor_delta or {}).items():
        t = tensors[name].copy()
        t.flat[0] += np.float32(delta)
        tensors[name] = t
    model = ModelToWrite(spec, tensors, notes=["deterministic demo weights (seeded He-normal), not a trained model"])
    return write_archive(path, backend="tensorflow", source_era="sample", models={"diffraction_to_obj": model},
                         params=params, intensity_scale=scale if scale is not None else params["intensity_scale"])


# ---------------------------------------------------------------------------------------------------
# max_abs_diff
# ---------------------------------------------------------------------------------------------------
def test_max_abs_diff_values_and_non_finite() -> None:
    a = np.array([1.0, 2.0, np.nan, np.inf], dtype=np.float32)
    assert max_abs_diff(a, a.copy()) == 0.0  # NaN/Inf in the same place with the same bits: identical
    b = a.copy()
    b[1] = 2.5
    assert max_abs_diff(a, b) == pytest.approx(0.5)
    c = a.copy()
    c[2] = 0.0  # NaN facing a number
    assert math.isinf(max_abs_diff(a, c))
    d = a.copy()
    d[3] = -np.inf
    assert math.isinf(max_abs_diff(a, d))
    z = np.array([1 + 1j, 2 - 1j], dtype=np.complex64)
    w = z.copy()
    w[0] = 1 + 1.5j
    assert max_abs_diff(z, w) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------
# Real archives
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["tf_N64_gs1", "torch_N64_gs1", "torch_N64_gs1/lightning.ckpt"])
def test_archive_equals_itself(fixtures_dir: Path, case: str) -> None:
    code, doc = _diff_json(fixtures_dir / case, fixtures_dir / case)
    assert code == 0 and doc["equivalent"] and doc["differences"] == 0
    arch = read_archive(fixtures_dir / case)
    assert sum(m["compared"] for m in doc["models"]) == sum(len(m.tensor_info) for m in arch.models.values())
    code, out, _ = _cli("diff", str(fixtures_dir / case), str(fixtures_dir / case))
    assert code == 0 and "equivalent" in out and "bit-identical" in out


def test_gridsize_1_vs_2(fixtures_dir: Path) -> None:
    a, b = fixtures_dir / "tf_N64_gs1", fixtures_dir / "tf_N64_gs2"
    code, doc = _diff_json(a, b)
    assert code == 1 and not doc["equivalent"]
    changed = {c["key"]: c for c in doc["params"]["changed"]}
    assert changed["gridsize"]["a"] == 1 and changed["gridsize"]["b"] == 2
    assert changed["probe"]["a"] == {"dtype": "complex64", "shape": [64, 64, 1]}
    assert changed["probe"]["max_abs_diff"] > 0
    primary = next(m for m in doc["models"] if m["name"] == "diffraction_to_obj")
    assert primary["status"] == "changed"
    shapes = {s["name"]: (s["a"], s["b"]) for s in primary["shape_mismatch"]}
    # gridsize 2 → 4 input channels for the first conv (OIHW) and 4 output channels per head
    assert shapes["encoder.0.conv1.weight"] == ([32, 1, 3, 3], [32, 4, 3, 3])
    network = {c["key"]: (c["a"], c["b"]) for c in primary["network"]}
    assert network["gridsize"] == (1, 2) and network["channels_in"] == (1, 4)
    code, out, _ = _cli("diff", str(a), str(b))
    assert code == 1 and "encoder.0.conv1.weight" in out and "gridsize" in out


def test_n64_vs_n128_lists_missing_and_extra_tensors(fixtures_dir: Path) -> None:
    a, b = fixtures_dir / "tf_N64_gs1", fixtures_dir / "tf_N128_gs1"
    code, doc = _diff_json(a, b)
    assert code == 1
    ta = read_archive(a).primary.tensor_info
    tb = read_archive(b).primary.tensor_info
    primary = next(m for m in doc["models"] if m["name"] == "diffraction_to_obj")
    assert set(primary["missing"]) == set(ta) - set(tb)
    assert set(primary["extra"]) == set(tb) - set(ta) and primary["extra"]


def test_bundle_vs_its_lightning_checkpoint(fixtures_dir: Path) -> None:
    """Same trained weights (the Lightning state_dict is what the bundle saved), different metadata."""
    code, doc = _diff_json(fixtures_dir / "torch_N64_gs1", fixtures_dir / "torch_N64_gs1/lightning.ckpt")
    assert code == 1
    primary = next(m for m in doc["models"] if m["name"] == "diffraction_to_obj")
    assert primary["status"] == "same" and primary["compared"] == 63 and not primary["value_diff"]
    auto = next(m for m in doc["models"] if m["name"] == "autoencoder")
    assert auto["status"] == "only in a" and auto["sentinel"] == [True, None]
    assert doc["header"][0]["key"] == "intensity_scale" and doc["header"][0]["b"] is None
    assert doc["torch_config"]["added"] == ["hyper_parameters"]


# ---------------------------------------------------------------------------------------------------
# Crafted differences
# ---------------------------------------------------------------------------------------------------
def test_one_tensor_value_and_atol(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a.zip")
    b = _sample_variant(tmp_path / "b.zip")
    code, doc = _diff_json(a, b)
    assert code == 0 and doc["equivalent"]  # same seeds, same content, different files
    c = _sample_variant(tmp_path / "c.zip", tensor_delta={"phase.conv2.bias": 1e-3})
    code, doc = _diff_json(a, c)
    assert code == 1 and doc["differences"] == 1
    primary = doc["models"][0]
    assert [v["name"] for v in primary["value_diff"]] == ["phase.conv2.bias"]
    assert primary["value_diff"][0]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert _diff_json(a, c, "--atol", "1e-2")[0] == 0
    assert _diff_json(a, c, "--atol", "1e-4")[0] == 1
    code, out, _ = _cli("diff", str(a), str(c))
    assert code == 1 and "phase.conv2.bias" in out and "max abs diff" in out


def test_params_added_removed_changed_and_scale(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a.zip")
    b = _sample_variant(tmp_path / "b.zip", extra_params={"label": "new", "nphotons": 1e8}, drop_params=("offset",),
                        scale=123.0)
    code, doc = _diff_json(a, b)
    assert code == 1
    assert doc["params"]["added"] == ["label"]
    assert doc["params"]["removed"] == ["offset"]
    changed = {c["key"]: c for c in doc["params"]["changed"]}
    assert set(changed) == {"nphotons"}  # params["intensity_scale"] untouched; the manifest scale differs
    assert changed["nphotons"]["a"] == 1e9 and changed["nphotons"]["b"] == 1e8
    assert doc["header"][0]["key"] == "intensity_scale" and doc["header"][0]["b"] == 123.0


def test_diff_of_unreadable_archive_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    a = write_sample(tmp_path / "a.zip")
    code, out, err = _cli("diff", str(a), str(bad))
    assert code == 1 and out == "" and err.startswith("error: ") and "bad.zip" in err and err.count("\n") == 1
