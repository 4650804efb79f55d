"""``save_torch`` / ``save_keras``: train → save → load in every engine gives the trained outputs; bad input refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ptycho_bridge as pb
from ptycho_bridge.ops.engines import availability
from ptycho_bridge.ops.sample import sample_params
from ptycho_bridge.spec.network import tf_padded_size, tf_spec, torch_spec

TOL = 1e-5
SCALE = 988.2117919921875


def _x(n: int = 4, c: int = 1, N: int = 64, seed: int = 0) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).standard_normal((n, c, N, N))).astype(np.float32)


@pytest.fixture(scope="module")
def trained_torch() -> Any:
    """Our torch engine's module (with CBAM) after a few seeded Adam steps on synthetic data."""
    torch = pytest.importorskip("torch")
    from converters.pytorch.network import build_module

    torch.manual_seed(0)
    spec = torch_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, amp_activation="sigmoid",
                      c_outer=1, cbam_encoder=True, cbam_bottleneck=False, batch_norm=False)
    module = build_module(spec).train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    x = torch.from_numpy(_x(2, seed=1))
    for _ in range(2):
        opt.zero_grad()
        loss = (module(x).abs() - x).pow(2).mean()
        loss.backward()
        opt.step()
    return module.eval()


def _reference(module: Any, x: np.ndarray) -> np.ndarray:
    from converters.pytorch.network import run

    return run(module, x)


def test_save_torch_round_trip_all_engines(trained_torch: Any, tmp_path: Path) -> None:
    out = pb.save_torch(tmp_path / "m.zip", trained_torch, intensity_scale=SCALE)
    arch = pb.open(out)
    assert arch.source_era == "torch-state-dict" and arch.intensity_scale == SCALE
    assert arch.models["autoencoder"].sentinel and "torch_scaling_metadata.pt" in arch.members
    x = _x()
    ref = _reference(trained_torch, x)
    for engine in ("torch", "onnx", "keras"):
        if availability(engine):
            continue
        if engine == "keras":  # the Keras engine has no CBAM: refused by the registry, naming the field
            with pytest.raises(pb.ConversionRefused) as info:
                pb.load_model(out, engine=engine)
            assert info.value.field == "cbam"
            continue
        got = pb.load_model(out, engine=engine).predict(x)
        assert np.abs(got - ref).max() <= TOL * np.abs(ref).max(), engine


def test_save_torch_from_upstream_state_dict_and_configs(trained_torch: Any, tmp_path: Path) -> None:
    """Upstream Lightning keys + config dicts (what a PtychoPINN_Lightning gives) → same network."""
    from dataclasses import dataclass

    from converters.pytorch.write import lightning_state_dict

    @dataclass
    class ModelConfig:  # the fields upstream's ModelConfig dataclass uses for this network
        n_filters_scale: int = 1
        object_big: bool = True
        probe_big: bool = True
        amp_activation: str = "sigmoid"
        cbam_encoder: bool = True

    canonical = {k: v.detach().numpy() for k, v in trained_torch.state_dict().items()}
    sd = lightning_state_dict(trained_torch.spec, canonical, model_config={"mode": "Unsupervised"})

    class Lightning:  # LightningModule-like: state_dict() and hparams
        hparams = {"model_config": ModelConfig(), "data_config": {"N": 64, "grid_size": (1, 1)}}

        def state_dict(self) -> Any:
            return sd

    out = pb.save_torch(tmp_path / "l.zip", Lightning(), intensity_scale=SCALE)
    assert pb.open(out).network == trained_torch.spec
    x = _x()
    got = pb.load_model(out, engine="torch").predict(x)
    assert np.abs(got - _reference(trained_torch, x)).max() == 0.0


def _bad_cases(trained_torch: Any) -> dict[str, tuple[Any, dict[str, Any], str]]:
    sd = {k: v.detach().numpy().copy() for k, v in trained_torch.state_dict().items()}
    missing = {k: v for k, v in sd.items() if k != "amp.conv1.bias"}
    extra = {**sd, "encoder.0.conv3.weight": np.zeros((1,), np.float32)}
    shapes = {**sd, "amp.conv1.bias": np.zeros((7,), np.float32)}
    nan = {**sd, "amp.conv1.bias": np.full_like(sd["amp.conv1.bias"], np.nan)}
    cfg = {"model_config": {"n_filters_scale": 1, "object_big": True, "probe_big": True, "amp_activation": "sigmoid",
                            "cbam_encoder": True}, "data_config": {"N": 64, "grid_size": (1, 1)}}

    class Linear:
        def state_dict(self) -> Any:
            return {"weight": np.zeros((2, 2), np.float32)}

    return {
        "missing key": (missing, cfg, "missing tensor 'amp.conv1.bias'"),
        "extra key": (extra, cfg, "unexpected tensor 'encoder.0.conv3.weight'"),
        "wrong shape": (shapes, cfg, "has shape \\[7\\]"),
        "NaN weights": (nan, cfg, "non-finite"),
        "not PtychoPINN": (Linear(), cfg, "not a PtychoPINN network"),
        "not a module": (object(), cfg, "not a PtychoPINN network"),
        "zero scale": (trained_torch, {"intensity_scale": 0.0}, "positive finite"),
        "negative scale": (trained_torch, {"intensity_scale": -3.0}, "positive finite"),
        "NaN scale": (trained_torch, {"intensity_scale": float("nan")}, "positive finite"),
    }


@pytest.mark.parametrize("label", ["missing key", "extra key", "wrong shape", "NaN weights", "not PtychoPINN",
                                   "not a module", "zero scale", "negative scale", "NaN scale"])
def test_save_torch_refuses_bad_input(label: str, trained_torch: Any, tmp_path: Path) -> None:
    obj, kw, message = _bad_cases(trained_torch)[label]
    kw = {"intensity_scale": SCALE, **kw}
    with pytest.raises(pb.BridgeError, match=message):
        pb.save_torch(tmp_path / "bad.zip", obj, **kw)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_save_keras_round_trip_all_engines(tmp_path: Path) -> None:
    if availability("keras"):
        pytest.skip(availability("keras"))
    from converters.tensorflow.keras_model import build_keras_model, run_core
    from ptycho_bridge.ops.sample import sample_tensors

    params = sample_params()
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                   amp_activation="sigmoid", padded_size=tf_padded_size(64, 1, params["offset"],
                                                                       params["max_position_jitter"]))
    model = build_keras_model(spec, sample_tensors(spec), intensity_scale=params["intensity_scale"])
    import tensorflow as tf

    from converters.tensorflow.keras_model import core_of

    x = _x(2, seed=2)
    core = core_of(model)
    nhwc = tf.constant(np.transpose(x, (0, 2, 3, 1)))
    opt = tf.keras.optimizers.SGD(1e-2)
    for _ in range(2):  # a few seeded optimiser steps on synthetic data (eager: no graph compile)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.abs(core(nhwc, training=True)) - nhwc))
        opt.apply_gradients(zip(tape.gradient(loss, core.trainable_variables), core.trainable_variables))
    ref = run_core(model, x)
    out = pb.save_keras(tmp_path / "k.zip", model, params=params)
    arch = pb.open(out)
    assert arch.source_era == "keras-model" and "diffraction_to_obj/model.keras" in arch.members
    for engine in ("keras", "torch", "onnx"):
        if availability(engine):
            continue
        got = pb.load_model(out, engine=engine).predict(x)
        assert np.abs(got - ref).max() <= TOL * np.abs(ref).max(), engine
    with pytest.raises(pb.OutputExistsError):
        pb.save_keras(out, model, params=params)


def test_save_keras_refuses(tmp_path: Path) -> None:
    if availability("keras"):
        pytest.skip(availability("keras"))
    import keras

    from converters.tensorflow.keras_model import build_keras_model
    from ptycho_bridge.ops.sample import sample_tensors

    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(pb.ConversionRefused, match="not a PtychoPINN"):
        pb.save_keras(tmp_path / "d.zip", dense, params=sample_params())
    params = sample_params()
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                   amp_activation="sigmoid", padded_size=tf_padded_size(64, 1, 4, 10))
    model = build_keras_model(spec, sample_tensors(spec), intensity_scale=None)
    with pytest.raises(pb.ConversionRefused, match="intensity_scale"):
        pb.save_keras(tmp_path / "k.zip", model, params={k: v for k, v in params.items() if k != "intensity_scale"})
    with pytest.raises(pb.SpecError, match="gridsize"):
        pb.save_keras(tmp_path / "k.zip", model, params={**params, "gridsize": 2})
    assert list(tmp_path.iterdir()) == []
