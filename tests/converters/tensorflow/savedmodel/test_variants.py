"""The SavedModel era's one-channel amplitude head at gridsize 2, on archives built by ``variant_build``.

Why: every SavedModel-era network (upstream before c03673d) had ``Conv2D(1)`` amplitude heads, but the only
fixture is gridsize 1, where that is invisible. These archives (the fixture's members re-derived for
gridsize 2 with random weights) check that the reader derives ``amp_channels = 1``, that the engines run the
broadcast exactly as the float64 numpy reference of the documented formulas does, that ``migrate`` widens the
head for today's upstream without changing the per-patch object, and that ``inspect`` names the variant.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.ops.diff import diff_archives
from ptycho_bridge.ops.engines import availability, load_engine
from ptycho_bridge.ops.migrate import migrate
from ptycho_bridge.ops.report import inspect_report, validate_path
from ptycho_bridge.spec.conventions import tf_scale_divisor
from ptycho_bridge.spec.network import NetworkSpec, tf_padded_size, tf_spec
from tests._support import legacy_only
from tests.converters.tensorflow.savedmodel.hostile_build import FIXTURE_ZIP, members
from tests.converters.tensorflow.savedmodel.variant_build import savedmodel_archive
from tests.numpy_reference import random_tensors, reference

pytestmark = pytest.mark.skipif(not FIXTURE_ZIP.exists(), reason=f"SavedModel-era fixture absent ({FIXTURE_ZIP})")
TOL = 1e-5
SCALE = 1234.5  # exactly a float32: params.dill stores numpy.float32
AMP_HEAD = ("amp.conv1.weight", "amp.conv1.bias", "amp.conv2.weight", "amp.conv2.bias")


def _spec(gridsize: int) -> NetworkSpec:
    return tf_spec(N=64, gridsize=gridsize, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                   amp_activation="sigmoid", padded_size=tf_padded_size(64, gridsize, 4, 10), amp_channels=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[NetworkSpec, dict[str, np.ndarray], Path]]:
    out = {}
    for g in (1, 2):
        spec = _spec(g)
        tensors = random_tensors(spec, seed=20 + g)
        path = tmp_path_factory.mktemp(f"gs{g}") / "wts.h5.zip"
        path.write_bytes(savedmodel_archive(spec, tensors, intensity_scale=SCALE))
        out[g] = (spec, tensors, path)
    return out


def _spec_of(arch: Any) -> NetworkSpec:
    spec = arch.primary.spec
    assert spec is not None
    return spec


def _x(spec: NetworkSpec, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (2, spec.channels_in, spec.N, spec.N)).astype(np.float32)


def _scaled_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def test_builder_reproduces_the_fixture_from_its_own_tensors() -> None:
    """Gridsize 1 with the fixture's tensors and scale gives back upstream's bytes, member for member."""
    src = read_archive(FIXTURE_ZIP)
    assert src.intensity_scale is not None
    data = savedmodel_archive(_spec_of(src), dict(src.primary.tensors), intensity_scale=src.intensity_scale)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        got = {n: z.read(n) for n in z.namelist()}
    want = members()
    assert sorted(got) == sorted(want)
    assert [n for n in want if got[n] != want[n]] == []


@pytest.mark.parametrize("gridsize", [1, 2])
def test_reads_back_with_the_one_channel_amp_head(built: dict, gridsize: int) -> None:
    spec, tensors, path = built[gridsize]
    arch = read_archive(path)
    assert (arch.era, arch.warnings) == ("tf-savedmodel-1", [])
    entry, got_spec = arch.primary, _spec_of(arch)
    assert got_spec == spec and entry.warnings == []
    assert got_spec.amp_channels == (1 if gridsize == 2 else None)
    assert (got_spec.channels_in, got_spec.channels_out, got_spec.padded_size) == (
        gridsize**2, gridsize**2, 64 + (gridsize - 1) * 4 + 10)
    assert entry.reassembly_centring is False
    assert arch.intensity_scale == SCALE and np.float32(entry.payload["input_divisor"]) == tf_scale_divisor(SCALE)
    for name in ("diffraction_to_obj", "autoencoder"):
        got = dict(arch.models[name].tensors)
        assert sorted(got) == sorted(tensors), name
        for k, v in tensors.items():
            assert got[k].dtype == np.float32 and np.array_equal(got[k], v), (name, k)
    assert got["amp.conv1.weight"].shape[0] == 1 and got["phase.conv1.weight"].shape[0] == gridsize**2
    assert validate_path(path)["valid"] is True


@pytest.fixture(scope="module")
def gs2_reference(built: dict) -> tuple[np.ndarray, np.ndarray]:
    """(x, float64 reference output), from the spec and tensors given to the builder, not the ones read back."""
    spec, tensors, _path = built[2]
    x = _x(spec)
    return x, reference(spec, tensors, x)


@pytest.mark.parametrize("engine", ["onnx", "torch"])
def test_engines_match_the_numpy_reference(built: dict, gs2_reference: tuple, engine: str) -> None:
    """Gridsize 2 (gridsize 1 is checked against upstream's own golden in test_parity.py)."""
    gridsize = 2
    reason = availability(engine)
    if reason is not None:
        pytest.skip(reason)
    arch = read_archive(built[gridsize][2])
    x, ref = gs2_reference
    got = load_engine(engine, _spec_of(arch), arch.primary.tensors).run(x)
    assert got.shape == ref.shape == (2, gridsize**2, 64, 64)
    assert _scaled_err(got, ref) <= TOL
    # the broadcast: every patch has the same amplitude, different phases
    assert np.allclose(np.abs(got[:, 1:]), np.abs(got[:, :1]), rtol=1e-6, atol=0)
    assert not np.allclose(np.angle(got[:, 1:]), np.angle(got[:, :1]), atol=1e-3)


@pytest.fixture(scope="module")
def migrated(built: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    src = built[2][2]
    out = tmp_path_factory.mktemp("mig") / "wts.h5.zip"
    migrate(src, out)
    return src, out


def test_migrate_keeps_the_variant_and_widens_the_legacy_head(migrated: tuple[Path, Path], tmp_path: Path) -> None:
    src_path, out = migrated
    assert validate_path(out)["valid"] is True
    src, mig = read_archive(src_path), read_archive(out)
    src_spec = _spec_of(src)
    assert _spec_of(mig) == src_spec and src_spec.amp_channels == 1
    assert mig.primary.reassembly_centring is False
    report = diff_archives(src, mig)
    assert report["equivalent"], report

    legacy = read_archive(legacy_only(out, tmp_path / "legacy.zip"))
    assert legacy.era == "tf-modelmanager-1"
    legacy_spec = _spec_of(legacy)
    assert legacy_spec.amp_channels is None
    assert legacy_spec == dataclasses.replace(src_spec, amp_channels=None)
    old, new = dict(src.primary.tensors), dict(legacy.primary.tensors)
    assert sorted(old) == sorted(new)
    for name, value in old.items():
        if name in AMP_HEAD:  # four identical copies of the one amplitude channel (output axis 0)
            assert value.shape[0] == 1 and new[name].shape == (4, *value.shape[1:])
            assert all(np.array_equal(new[name][i], value[0]) for i in range(4)), name
        else:
            assert np.array_equal(new[name], value), name
    if availability("onnx") is None:
        x = _x(src_spec, seed=9)
        a = load_engine("onnx", src_spec, old).run(x)
        b = load_engine("onnx", legacy_spec, new).run(x)
        assert _scaled_err(b, a) <= TOL


def test_inspect_names_the_shared_amp_head(built: dict) -> None:
    keys = {g: [v["key"] for v in inspect_report(read_archive(built[g][2]))["network"].get("variants", [])]
            for g in (1, 2)}
    assert "amp_head_shared" in keys[2] and "amp_head_shared" not in keys[1]
    result = CliRunner().invoke(main, ["inspect", str(built[2][2]), "--json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    (shared,) = [v for v in doc["network"]["variants"] if v["key"] == "amp_head_shared"]
    assert "c03673d" in shared["upstream"]


def test_an_amp_head_upstream_never_built_is_refused(tmp_path: Path) -> None:
    """Two amplitude channels at gridsize 2 (neither the era's 1 nor today's 4): one error line, exit 1."""
    spec = _spec(2)
    tensors = random_tensors(spec, seed=7)
    for conv in ("amp.conv1", "amp.conv2"):
        for part in ("weight", "bias"):
            tensors[f"{conv}.{part}"] = np.concatenate([tensors[f"{conv}.{part}"]] * 2)
    path = tmp_path / "wts.h5.zip"
    path.write_bytes(savedmodel_archive(spec, tensors, intensity_scale=SCALE))
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert "keras_metadata.pb" in lines[0] and "filters are 2" in lines[0]
