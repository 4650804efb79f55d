"""``load_model`` / ``open``: every fixture, every engine that can build it, reproduces the goldens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ptycho_bridge as pb
from ptycho_bridge.ops.engines import availability
from ptycho_bridge.spec import reassembly as R
from ptycho_bridge.spec.conventions import golden_canonical_input
from tests._support import CASES

TOL = 1e-5


def _check(case: str, engine: str, fixtures_dir: Path) -> None:
    folder = fixtures_dir / case
    arch = pb.open(folder / "wts.h5.zip")
    golden = dict(np.load(folder / "golden.npz"))
    runnable = pb.load_model(folder / "wts.h5.zip", engine=engine)
    assert runnable.engine == engine and runnable.spec == arch.network
    obj = runnable.predict(golden_canonical_input(golden, arch.backend, arch.intensity_scale), golden["positions"])
    assert obj.dtype == np.complex64 and obj.shape[1:] == (arch.network.channels_out, arch.network.N, arch.network.N)
    if arch.backend == "pytorch":  # torch goldens are the per-patch object
        err = np.abs(obj - golden["output"]).max() / np.abs(golden["output"]).max()
        assert err <= TOL, f"{case}/{engine}: {err:.3g}·max"
        return
    spec = arch.network  # TF goldens are upstream's trimmed_obj: reassemble as upstream does
    out = R.reassemble(obj, golden["positions"], N=spec.N, padded_size=spec.padded_size, object_big=spec.object_big)
    for region, r in R.compare_regions(out, golden["output"]).items():
        assert r["scaled_err"] <= TOL, f"{case}/{engine} {region}: {r['scaled_err']:.3g}·max"


@pytest.mark.parametrize("engine", ["onnx", "torch", "keras"])
@pytest.mark.parametrize("case", CASES)
def test_load_model_reproduces_golden(case: str, engine: str, fixtures_dir: Path) -> None:
    if availability(engine):
        pytest.skip(f"{engine}: {availability(engine)}")
    spec = pb.open(fixtures_dir / case / "wts.h5.zip").network
    if spec.cbam_encoder and engine == "keras":
        with pytest.raises(pb.ConversionRefused) as info:
            pb.load_model(fixtures_dir / case / "wts.h5.zip", engine=engine)
        assert info.value.field == "cbam" and "keras" in str(info.value)
        return
    _check(case, engine, fixtures_dir)


def test_framework_handles_and_wrong_handle(fixtures_dir: Path) -> None:
    r = pb.load_model(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip", engine="torch")
    assert not r.module.training and next(r.module.parameters()).device.type == "cpu"
    with pytest.raises(AttributeError, match="engine='keras'"):
        r.keras_model
    with pytest.raises(ValueError, match="rows"):
        r.predict(np.zeros((2, 1, 64, 64), np.float32), positions=np.zeros((3, 1, 2, 1), np.float32))
    with pytest.raises(pb.ConversionRefused, match="input has shape"):
        r.predict(np.zeros((2, 4, 64, 64), np.float32))


def test_sentinel_and_unknown_model_and_engine(fixtures_dir: Path) -> None:
    path = fixtures_dir / "torch_N64_gs1" / "wts.h5.zip"
    with pytest.raises(pb.ConversionRefused, match="sentinel") as info:
        pb.load_model(path, engine="torch", model="autoencoder")
    assert info.value.field == "model"
    with pytest.raises(pb.ConversionRefused, match="no model 'nope'"):
        pb.load_model(path, engine="torch", model="nope")
    with pytest.raises(pb.BridgeError, match="unknown engine"):
        pb.load_model(path, engine="jax")


def test_open_names_fields_as_inspect_json(fixtures_dir: Path) -> None:
    from ptycho_bridge.ops.report import inspect_report

    arch = pb.open(fixtures_dir / "torch_N64_gs2" / "wts.h5.zip")
    doc = inspect_report(arch)
    entry = arch.models["diffraction_to_obj"]
    assert entry.network.to_dict() == doc["models"]["diffraction_to_obj"]["network"]
    assert entry.n_tensors == doc["models"]["diffraction_to_obj"]["n_tensors"]
    assert entry.tensor_bytes == doc["models"]["diffraction_to_obj"]["tensor_bytes"]
    assert arch.network.N == doc["network"]["N"] and arch.source_era == doc["source_era"]
    assert arch.format_version == doc["format_version"] and arch.intensity_scale == doc["intensity_scale"]


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, ptycho_bridge as pb; heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', "
            "'ptycho_bridge.api.load', 'ptycho_bridge.api.save') if m in sys.modules]; "
            "assert not heavy, heavy; assert callable(pb.save_torch) and 'torch' not in sys.modules; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "ok"
