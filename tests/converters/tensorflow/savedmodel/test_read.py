"""The tf-savedmodel-1 reader on the real fixture: era, network, tensors, and what it never imports.

Why: the reader must give the same neutral model as the ``.keras`` reader would for the same network
(spec, canonical tensors), take detection unambiguously from ``tf-modelmanager-1`` (both write
``manifest.dill`` '1.0'), and keep ``inspect``/``validate``/``export-onnx`` free of TF/Keras/torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converters.tensorflow.savedmodel import crc
from converters.tensorflow.savedmodel.read import SavedModelReader
from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.formats.detect import detect_reader, open_container
from ptycho_bridge.spec.conventions import tf_scale_divisor
from ptycho_bridge.spec.network import expected_tensors
from tests._support import FIXTURES_DIR, REPO, SAVEDMODEL_DIR

CASE = SAVEDMODEL_DIR / "tf215_N64_gs1"
ARCHIVE = CASE / "wts.h5.zip"
pytestmark = pytest.mark.skipif(not ARCHIVE.exists(), reason=f"SavedModel-era fixture absent ({SAVEDMODEL_DIR})")


@pytest.fixture(scope="module")
def arch():  # type: ignore[no-untyped-def]
    return read_archive(ARCHIVE)


def test_era_network_and_scale(arch) -> None:  # type: ignore[no-untyped-def]
    assert (arch.era, arch.backend) == ("tf-savedmodel-1", "tensorflow")
    assert sorted(arch.models) == ["autoencoder", "diffraction_to_obj"]
    spec = arch.primary.spec
    assert (spec.N, spec.gridsize, spec.amp_activation, spec.padded_size) == (64, 1, "sigmoid", 74)
    assert isinstance(arch.intensity_scale, float) and arch.intensity_scale == pytest.approx(988.2117919921875, abs=0)
    # the input divisor baked into the Keras 2 graph is exp(f32(log s)) in float32, as the project's convention
    assert np.float32(arch.primary.payload["input_divisor"]) == tf_scale_divisor(arch.intensity_scale)
    assert arch.primary.reassembly_centring is False
    assert arch.warnings == []


def test_tensors_match_spec_and_golden_probe(arch) -> None:  # type: ignore[no-untyped-def]
    tensors = dict(arch.primary.tensors)
    assert {k: v.shape for k, v in tensors.items()} == expected_tensors(arch.primary.spec)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in tensors.values())
    ae = dict(arch.models["autoencoder"].tensors)
    assert all(np.array_equal(ae[k], tensors[k]) for k in tensors)  # shared layers
    golden = np.load(CASE / "golden.npz")
    assert np.array_equal(arch.probe, golden["probe"])  # pickled EagerTensor decoded with nothing imported
    assert arch.models["autoencoder"].payload["probe_matches_params"] is True


def test_detection_is_unambiguous() -> None:
    zf = open_container(ARCHIVE)
    try:
        assert detect_reader(zf)[0] is SavedModelReader
    finally:
        zf.close()
    keras_era = FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip"
    if keras_era.exists():
        assert read_archive(keras_era).era == "tf-modelmanager-1"


def test_crc32c_numpy_matches_reference() -> None:
    data = np.random.default_rng(0).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert crc.crc32c_numpy(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc.crc32c_numpy(data) == crc.crc32c(data)
    assert crc.unmask(crc.mask(0x12345678)) == 0x12345678


def test_inspect_json_names_era_and_network() -> None:
    result = CliRunner().invoke(main, ["inspect", "--json", str(ARCHIVE)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["era"] == "tf-savedmodel-1"
    assert report["network"]["N"] == 64 and report["network"]["gridsize"] == 1


def test_validate_passes() -> None:
    result = CliRunner().invoke(main, ["validate", "--json", str(ARCHIVE)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


FRAMEWORK_PROBE = """
import sys
from ptycho_bridge.cli import main
try:
    main({args!r}, standalone_mode=False)
finally:
    bad = sorted({{m.split('.')[0] for m in sys.modules}} & {{'tensorflow', 'keras', 'tf_keras', 'torch'}})
    print('FRAMEWORKS', bad)
"""


@pytest.mark.parametrize("verb", ["inspect", "validate", "export-onnx"])
def test_no_framework_imported(verb: str, tmp_path: Path) -> None:
    args = [verb, str(ARCHIVE)]
    if verb == "export-onnx":
        pytest.importorskip("onnx")
        args += ["-o", str(tmp_path / "m.onnx"), "--reassembly"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", FRAMEWORK_PROBE.format(args=args)], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout
    assert "FRAMEWORKS []" in out, out
