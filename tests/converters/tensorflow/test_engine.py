"""Keras engine (converters/tensorflow.py) against upstream TF goldens.

Each TF fixture's golden output is upstream's ``diffraction_to_obj`` on ``golden['input']`` and
``golden['positions']`` (one call, batch of 4). Errors are checked per region, each relative to that
region's own ``max|golden|``: with ``probe.big`` the border is ``obj / 0.001`` (×1000).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# import the engine first: it sets TF_ENABLE_ONEDNN_OPTS=0, which TF reads only at its own import
from converters.tensorflow import keras_model as ctf  # noqa: E402

pytest.importorskip("tensorflow")

from ptycho_bridge.errors import SpecError  # noqa: E402
from ptycho_bridge.formats.detect import read_archive  # noqa: E402
from ptycho_bridge.spec import reassembly as R  # noqa: E402
from ptycho_bridge.spec.conventions import golden_canonical_input  # noqa: E402
from ptycho_bridge.spec.network import expected_tensors, tf_spec  # noqa: E402

TF_CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1")
TOL = 1e-5  # × max|golden| of the region


@pytest.fixture(scope="module", params=TF_CASES)
def case(request: pytest.FixtureRequest, fixtures_dir: Path) -> dict[str, Any]:
    """One model per fixture and module: build, run the golden batch once, keep the results."""
    folder = fixtures_dir / request.param
    arch = read_archive(folder / "wts.h5.zip")
    golden = dict(np.load(folder / "golden.npz"))
    spec = arch.primary.spec
    model = ctf.build_diffraction_to_obj(spec, arch.primary.tensors, intensity_scale=arch.intensity_scale)
    x_norm = golden_canonical_input(golden, "tensorflow", arch.intensity_scale)
    return {
        "name": request.param,
        "spec": spec,
        "golden": golden,
        "model": model,
        "trimmed": ctf.run_tf(model, golden["input"], golden["positions"]),
        "core": ctf.run_core(model, x_norm),
    }


def _assert_regions(actual: np.ndarray, expected: np.ndarray, label: str) -> None:
    res = R.compare_regions(actual, expected)
    for region in ("centre", "border"):
        r = res[region]
        assert r["scaled_err"] <= TOL, (
            f"{label}: {region} max abs err {r['max_abs_err']:.3g} = {r['scaled_err']:.3g}·max|golden| "
            f"(max|golden| {r['max_ref']:.3g}) exceeds {TOL:g}"
        )


def test_keras_engine_reproduces_golden(case: dict[str, Any]) -> None:
    g = case["golden"]
    assert case["trimmed"].shape == g["output"].shape
    assert case["trimmed"].dtype == np.complex64
    _assert_regions(case["trimmed"], g["output"], f"{case['name']} keras trimmed_obj")


def test_numpy_reassembly_of_keras_core_reproduces_golden(case: dict[str, Any]) -> None:
    spec, g = case["spec"], case["golden"]
    out = R.reassemble(case["core"], g["positions"], N=spec.N, padded_size=spec.padded_size, object_big=spec.object_big)
    _assert_regions(out, g["output"], f"{case['name']} numpy reassembly of keras core")


def test_core_is_canonical(case: dict[str, Any]) -> None:
    spec, core = case["spec"], case["core"]
    B = case["golden"]["input"].shape[0]
    assert core.shape == (B, spec.channels_out, spec.N, spec.N) and core.dtype == np.complex64
    # probe.big: the border of each patch comes from the outer branch, so it is non-zero there
    _, border = R.centre_border_masks(spec.N)
    assert np.abs(core[..., border]).max() > 0


def test_tf_and_numpy_reassembly_agree(case: dict[str, Any]) -> None:
    spec, g = case["spec"], case["golden"]
    out = R.reassemble(case["core"], g["positions"], N=spec.N, padded_size=spec.padded_size)
    res = R.compare_regions(out, case["trimmed"])
    assert res["all"]["scaled_err"] <= 1e-6


def test_batch_mean_centring_couples_samples(case: dict[str, Any]) -> None:
    # upstream centres offsets over the whole batch: one sample alone gives a different result
    g = case["golden"]
    single = ctf.run_tf(case["model"], g["input"][:1], g["positions"][:1])
    assert not np.allclose(single[0], case["trimmed"][0])


def _random_tensors(spec: Any, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_tensors(spec).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        out[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return out


def test_object_big_false_returns_obj_unchanged() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=False, probe_big=True, pad_object=True,
                   amp_activation="swish", padded_size=74)
    model = ctf.build_diffraction_to_obj(spec, _random_tensors(spec), intensity_scale=None)
    x = np.random.default_rng(1).random((2, 64, 64, 1), dtype=np.float32)
    pos = np.random.default_rng(2).standard_normal((2, 1, 2, 1)).astype(np.float32)
    trimmed = ctf.run_tf(model, x, pos)
    core = ctf.run_core(model, x.transpose(0, 3, 1, 2))
    assert np.array_equal(trimmed, core.transpose(0, 2, 3, 1))


def test_probe_big_false_leaves_border_zero() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=False, pad_object=True,
                   amp_activation="sigmoid", padded_size=74)
    model = ctf.build_keras_model(spec, _random_tensors(spec), intensity_scale=None)
    core = ctf.run_core(model, np.random.default_rng(3).random((1, 1, 64, 64), dtype=np.float32))
    _, border = R.centre_border_masks(64)
    assert np.all(core[..., border] == 0)
    assert np.all(np.abs(core[..., ~border]) > 0)


def test_pad_object_false_head_builds() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=False,
                   amp_activation="softplus", padded_size=74)
    model = ctf.build_keras_model(spec, _random_tensors(spec), intensity_scale=None)
    core = ctf.run_core(model, np.random.default_rng(4).random((1, 1, 64, 64), dtype=np.float32))
    assert core.shape == (1, 1, 64, 64)
    assert np.all(np.abs(np.angle(core)) <= np.pi)


def test_loading_is_strict() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                   amp_activation="sigmoid", padded_size=74)
    tensors = _random_tensors(spec)
    missing = dict(tensors)
    del missing["phase.conv2.bias"]
    with pytest.raises(SpecError, match="phase.conv2.bias"):
        ctf.build_keras_model(spec, missing, intensity_scale=None)
    wrong = dict(tensors)
    wrong["encoder.0.conv1.weight"] = np.zeros((32, 1, 5, 5), np.float32)
    with pytest.raises(SpecError, match="encoder.0.conv1.weight"):
        ctf.build_keras_model(spec, wrong, intensity_scale=None)
    with pytest.raises(SpecError, match="CBAM"):
        ctf.build_keras_model(replace(spec, cbam_encoder=True), tensors, intensity_scale=None)


def test_batch_collapse_size_is_refused(case: dict[str, Any]) -> None:
    spec = case["spec"]
    B = 64 // spec.channels_in
    x = np.zeros((B, spec.N, spec.N, spec.channels_in), np.float32)
    with pytest.raises(ValueError, match="64"):
        ctf.run_tf(case["model"], x, np.zeros((B, 1, 2, spec.channels_in), np.float32))
