"""converters/tensorflow/keras_config.py: upstream's Keras ``config.json`` emitted without TensorFlow.

The fixtures' ``config.json`` was written by upstream's own factory; ours must equal it byte for byte
once the ``shared_object_id`` (a Python ``id()``, provenance only) is fed in. Configurations without
a fixture are checked against the reader's graph analysis and the closed form of conv names in
``../shared/docs/upstream-architecture.md`` §1.7, and, when Keras is installed, against a Keras replica of
upstream's factory (stub layers with upstream's class names, modules and registered names) that must
serialise to the same config and load our ``model.keras`` the way upstream's loader does.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.tensorflow import keras_config as kc
from converters.tensorflow import write as ta
from converters.tensorflow.keras_graph import analyse_config
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.spec.mapping import canonical_to_tf_array
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors
from tests._support import TF_CASES
from tests.converters.tensorflow.cases import (
    D2O,
    SID,
    VARIANTS,
    assert_same_tree,
    h5_tree,
    normalise_ids,
    random_tensors,
    variant_spec,
)


@pytest.mark.parametrize("name", TF_CASES)
def test_config_json_equals_upstream(name: str, fixtures_dir: Path) -> None:
    archive = fixtures_dir / name / "wts.h5.zip"
    spec = read_archive(archive).primary.spec
    with zipfile.ZipFile(archive) as zf, zipfile.ZipFile(zf.open(f"{D2O}/model.keras")) as kz:
        upstream = kz.read("config.json")
    fixture = json.loads(upstream)
    assert normalise_ids(kc.keras_config(spec)) == normalise_ids(fixture)
    # with the fixture's id, the serialised bytes are upstream's bytes (same key order, same separators)
    sid = int(SID.search(upstream).group(1))
    assert kc.config_json_bytes(kc.keras_config(spec, shared_object_id=sid)) == upstream


def _closed_form_names(spec: NetworkSpec) -> dict[str, str]:
    """../shared/docs/upstream-architecture.md §1.7: canonical conv prefix → Keras layer name ``conv2d_k``."""
    E, D = spec.n_encoder_blocks, spec.n_decoder_blocks
    X = 2 if (spec.pad_object and spec.probe_big) or not spec.pad_object else 0
    k: dict[str, int] = {}
    for b in range(E):
        k[f"encoder.{b}.conv1"], k[f"encoder.{b}.conv2"] = 2 * b, 2 * b + 1
    for h, head in enumerate(("amp", "phase")):
        base = 2 * E + h * (2 * D + 2 + X)
        for d in range(D):
            k[f"{head}.decoder.{d}.conv1"], k[f"{head}.decoder.{d}.conv2"] = base + 2 + 2 * d, base + 3 + 2 * d
        if spec.pad_object:
            k[f"{head}.conv1"] = base
        if spec.probe_big or not spec.pad_object:
            k[f"{head}.conv2"] = base + 1
            k[f"{head}.outer.conv1"], k[f"{head}.outer.conv2"] = base + 2 + 2 * D, base + 3 + 2 * D
    return {role: ("conv2d" if n == 0 else f"conv2d_{n}") for role, n in k.items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_config_analyses_back_to_the_spec(variant: str) -> None:
    spec = variant_spec(VARIANTS[variant])
    config = kc.keras_config(spec)
    graph = analyse_config(config, member="config.json")
    assert (graph.N, graph.channels, graph.n_filters_scale) == (spec.N, spec.channels_in, spec.n_filters_scale)
    assert (graph.object_big, graph.pad_object, graph.outer_branch) == (spec.object_big, spec.pad_object, spec.outer_tensors)
    assert (graph.amp_activation, graph.phase_scale, graph.use_polar) == (spec.amp_activation, math.pi, True)
    assert graph.padded_size == (spec.padded_size if spec.object_big else None)
    assert graph.inputs == ("input", "input_positions") and graph.outputs == ("trimmed_obj",)
    roles = {r.canonical: r.layer_name for r in graph.convs}
    assert roles == _closed_form_names(spec)
    assert {f"{c}.weight" for c in roles} == {k for k in expected_tensors(spec) if k.endswith(".weight")}
    conv_order = [l["name"] for l in config["config"]["layers"] if l["class_name"] == "Conv2D"]
    assert [r.alias for r in sorted(graph.convs, key=lambda r: conv_order.index(r.layer_name))] == [
        "conv2d" if i == 0 else f"conv2d_{i}" for i in range(len(conv_order))]


def test_refusals_name_the_field() -> None:
    spec = variant_spec(dict(N=128, gridsize=2, n_filters_scale=1))
    torch_like = replace(spec, outer_width=32, cbam_encoder=False)  # torch's outer width at N=128
    with pytest.raises(ConversionRefused) as exc:
        kc.keras_config(torch_like)
    assert exc.value.field == "outer_width"
    with pytest.raises(ConversionRefused) as exc:
        kc.keras_config(replace(spec, cbam_encoder=True))
    assert exc.value.field == "cbam_encoder"
    with pytest.raises(ConversionRefused) as exc:
        kc.keras_config(replace(spec, c_outer=4, channels_in=1))
    assert exc.value.field == "channels_in"
    with pytest.raises(ConversionRefused) as exc:
        kc.keras_config(spec, model_name="autoencoder")
    assert exc.value.field == "model"
    with pytest.raises(SpecError):
        kc.keras_config(replace(spec, padded_size=None))


# --------------------------------------------------------------------------------------------------
# Keras itself (optional): a replica of upstream's factory with stub layers
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _replica() -> Any:
    """Upstream's factory (model.py: create_model_with_gridsize → create_autoencoder …) over stub layers
    that carry upstream's class names, modules, registered names and get_config keys, so Keras' own
    naming, ordering and serialisation produce what upstream's would. Math is irrelevant here."""
    keras = pytest.importorskip("keras")
    from keras import layers

    def stub(name: str, module: str, keys: tuple[tuple[str, Any], ...] = (), out: Any = None, register: bool = True) -> type:
        def __init__(self: Any, **kw: Any) -> None:
            vals = {k: kw.pop(k, d) for k, d in keys}
            if name in ("IntensityScaler", "CombineComplexLayer"):
                kw.pop("dtype", None)
            layers.Layer.__init__(self, **kw)
            self._cfg = vals
            if name == "CenterMaskLayer":
                self.zero_pad = layers.ZeroPadding2D((vals["N"] // 4, vals["N"] // 4))

        def get_config(self: Any) -> dict[str, Any]:
            return {**layers.Layer.get_config(self), **self._cfg}

        def compute_output_spec(self: Any, x: Any, *a: Any, **k: Any) -> Any:
            first = x
            while isinstance(first, (list, tuple)):
                first = first[0]
            shape, dtype = out(self, first) if out else (first.shape, first.dtype)
            return keras.KerasTensor(shape, dtype=dtype)

        cls = type(name, (layers.Layer,), {"__init__": __init__, "get_config": get_config, "call": lambda self, x: x,
                                           "compute_output_spec": compute_output_spec, "__module__": module})
        return keras.saving.register_keras_serializable(package="ptycho")(cls) if register else cls

    def canvas(self: Any, t: Any) -> tuple[Any, str]:
        P = self._cfg.get("padded_size") or self._cfg.get("output_size") or stubs.padded
        return (t.shape[0], P, P, t.shape[-1]), "complex64"

    stubs = type("Stubs", (), {})()
    stubs.padded = 0
    stubs.IntensityScaler = stub("IntensityScaler", "ptycho.model")
    stubs.ActivationLayer = stub("ActivationLayer", "ptycho.custom_layers", (("activation_name", "sigmoid"), ("scale", 1.0)))
    stubs.CombineComplexLayer = stub("CombineComplexLayer", "ptycho.custom_layers", (("use_polar", True),))
    stubs.Reassemble = stub("ReassemblePatchesLayer", "ptycho.custom_layers",
                            (("padded_size", None), ("N", None), ("gridsize", None)), canvas)
    stubs.PadRec = stub("PadReconstructionLayer", "ptycho.custom_layers", (), canvas)
    stubs.Trim = stub("TrimReconstructionLayer", "ptycho.custom_layers", (("output_size", None),), canvas)
    stubs.CenterMask = stub("CenterMaskLayer", "ptycho.tf_helper", (("N", None), ("c", 1), ("kind", "center")),
                            lambda self, t: ((t.shape[0], t.shape[1], t.shape[2], 1), t.dtype), register=False)

    def up_block(x: Any, n: int) -> Any:
        x = layers.Conv2D(n, (3, 3), activation="relu", padding="same", data_format="channels_last")(x)
        x = layers.Conv2D(n, (3, 3), activation="relu", padding="same", data_format="channels_last")(x)
        return layers.UpSampling2D((2, 2), data_format="channels_last")(x)

    def build(spec: NetworkSpec) -> Any:
        keras.backend.clear_session()
        stubs.padded = spec.padded_size
        N, C, nfs = spec.N, spec.channels_in, spec.n_filters_scale
        image = keras.Input(shape=(N, N, C), name="input")
        positions = keras.Input(shape=(1, 2, C), name="input_positions")
        x = stubs.IntensityScaler(name="intensity_scaler")([image])
        for f in [nfs * (2048 // N) * 2**i for i in range(spec.n_encoder_blocks)]:
            x = layers.Conv2D(f, (3, 3), activation="relu", padding="same")(x)
            x = layers.Conv2D(f, (3, 3), activation="relu", padding="same")(x)
            x = layers.MaxPool2D((2, 2), padding="same")(x)

        def head(h: Any, which: str) -> Any:
            nf = C if spec.object_big else 1
            conv1 = layers.Conv2D(nf, (3, 3), padding="same")
            conv2 = layers.Conv2D(nf, (3, 3), padding="same")
            act = (stubs.ActivationLayer(activation_name=spec.amp_activation, name="amp") if which == "amp"
                   else stubs.ActivationLayer(activation_name="tanh", scale=math.pi, name="phi"))
            for f in spec.decoder_widths:
                h = up_block(h, f)
            if not spec.pad_object:
                return act(conv2(up_block(h, nfs * (2048 // N))))
            x1 = layers.ZeroPadding2D((N // 4, N // 4), name=("amp" if which == "amp" else "phase") + "_padded")(act(conv1(h[..., :-4])))
            if not spec.probe_big:
                return x1
            x2 = keras.activations.swish(conv2(up_block(h[..., -4:], nfs * (2048 // N))))
            return x1 + x2 * stubs.CenterMask(N=N, c=1, kind="border")(x2)

        obj = stubs.CombineComplexLayer(name="obj")([head(x, "amp"), head(x, "phase")])
        if spec.object_big:
            padded = stubs.Reassemble(padded_size=spec.padded_size, N=N, gridsize=spec.gridsize, dtype="complex64",
                                      name="padded_obj_2")([obj, positions])
        else:
            padded = stubs.PadRec(dtype="complex64", name="padded_obj_2")(obj)
        trimmed = stubs.Trim(output_size=N, dtype="complex64", name="trimmed_obj")(padded)
        keras.Model([image, positions], [trimmed])  # upstream's autoencoder comes first ("functional")
        return keras.Model(inputs=[image, positions], outputs=[trimmed])

    stubs.build = build
    stubs.keras = keras
    return stubs


KERAS_VARIANTS = ("pad_object_false", "gs2_object_big_false_probe_small", "N128_gs1_no_pad_no_big", "N256_gs2_probe_small",
                  "softplus_gs2")


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'center_mask_layer:UserWarning")
@pytest.mark.parametrize("variant", KERAS_VARIANTS)
def test_keras_replica_serialises_like_our_writer(variant: str, tmp_path: Path) -> None:
    stubs = _replica()
    spec = variant_spec(VARIANTS[variant])
    model = stubs.build(spec)
    model.save(tmp_path / "replica.keras")
    with zipfile.ZipFile(tmp_path / "replica.keras") as zf:
        config, weights = json.loads(zf.read("config.json")), zf.read("model.weights.h5")
    assert normalise_ids(config) == normalise_ids(kc.keras_config(spec))
    mine = ta.model_weights_h5(spec, random_tensors(spec), kc.keras_config(spec))
    assert_same_tree(h5_tree(mine), h5_tree(weights), values=False)  # values: Keras' random init


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer 'center_mask_layer:UserWarning")
@pytest.mark.parametrize("variant", ("object_big_false", "N128_gs2"))
def test_keras_loads_our_model_keras_like_upstreams_loader(variant: str, tmp_path: Path) -> None:
    stubs = _replica()
    spec = variant_spec(VARIANTS[variant])
    tensors = random_tensors(spec, seed=1)
    path = tmp_path / "model.keras"
    path.write_bytes(ta.model_keras_bytes(spec, tensors))
    # upstream: load_model(model.keras, custom_objects) then blank.set_weights(loaded.get_weights())
    loaded = stubs.keras.saving.load_model(path, custom_objects={"CenterMaskLayer": stubs.CenterMask})
    got = loaded.get_weights()
    roles = {r.layer_name: r.canonical for r in analyse_config(kc.keras_config(spec), member="config.json").convs}
    convs = [l.name for l in loaded.layers if l.__class__.__name__ == "Conv2D"]
    want = [canonical_to_tf_array(f"{roles[n]}.{p}", tensors[f"{roles[n]}.{p}"]) for n in convs for p in ("weight", "bias")]
    assert len(got) == len(want) == 2 * len(roles)
    assert all(g.shape == w.shape and np.array_equal(g, w) for g, w in zip(got, want))
    blank = stubs.build(spec)
    blank.set_weights(got)  # positional: raises on any shape mismatch
    assert [l.name for l in blank.layers] == [l.name for l in loaded.layers]
