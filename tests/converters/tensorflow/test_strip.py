"""converters.tensorflow.strip and ``migrate --drop-optimizer``: training state out, everything else byte-for-byte."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from converters.tensorflow.strip import keras_without_optimizer
from ptycho_bridge.cli import main
from ptycho_bridge.errors import FormatError


def _datasets(weights: bytes) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(weights), "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_fixture_autoencoder_loses_only_its_optimizer_group(fixtures_dir: Path) -> None:
    data = zipfile.ZipFile(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip").read("autoencoder/model.keras")
    out = keras_without_optimizer(data, member="autoencoder/model.keras")
    a, b = zipfile.ZipFile(io.BytesIO(data)), zipfile.ZipFile(io.BytesIO(out))
    assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
    for name in ("config.json", "metadata.json"):
        assert a.read(name) == b.read(name)
    before, after = _datasets(a.read("model.weights.h5")), _datasets(b.read("model.weights.h5"))
    assert sorted(before) != sorted(after) and not any(k.startswith("optimizer/") for k in after)
    assert sorted(after) == sorted(k for k in before if not k.startswith("optimizer/"))
    assert all(np.array_equal(before[k], after[k]) for k in after)
    assert len(out) < len(data) / 2


def test_a_zip_without_weights_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(FormatError, match="no model.weights.h5"):
        keras_without_optimizer(buf.getvalue(), member="m/model.keras")


def test_keras_loads_a_stripped_model_with_its_weights(tmp_path: Path) -> None:
    """Keras 3's own loader opens the stripped file (it skips the missing optimizer variables) with equal weights."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d1"), keras.layers.Dense(1, name="d2")])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 1)), epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    stripped = keras_without_optimizer(path.read_bytes(), member="m.keras")
    assert "optimizer" not in h5py.File(io.BytesIO(zipfile.ZipFile(io.BytesIO(stripped)).read("model.weights.h5")), "r")
    out = tmp_path / "s.keras"
    out.write_bytes(stripped)
    loaded = keras.models.load_model(out)
    for w0, w1 in zip(model.get_weights(), loaded.get_weights()):
        assert np.array_equal(w0, w1)
    x = rng.normal(size=(2, 3)).astype(np.float32)
    assert np.array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_migrate_drop_optimizer_is_smaller_valid_and_equal(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"
    runner = CliRunner()
    full, lean = tmp_path / "full.zip", tmp_path / "lean.zip"
    assert runner.invoke(main, ["migrate", str(src), "-o", str(full)]).exit_code == 0
    result = runner.invoke(main, ["migrate", str(src), "-o", str(lean), "--drop-optimizer", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert any("optimizer state dropped (90 tensors" in n for n in doc["notes"]) and doc["verified"]["equivalent"]
    assert lean.stat().st_size < full.stat().st_size * 0.75
    assert runner.invoke(main, ["validate", str(lean)]).exit_code == 0
    diff = runner.invoke(main, ["diff", str(src), str(lean), "--tensors-only"])
    assert diff.exit_code == 0 and "weights: equal" in diff.output
