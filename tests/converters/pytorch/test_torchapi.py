"""Reading Ptychodus 1.7 (upstream torchapi-devel) Lightning checkpoints: spec from the configs, every
width checked, and hostile checkpoints (wrong types, disagreeing widths, extra/missing keys) each
giving one ``error:`` line through the CLI. Ported from the scratch prototype's hostile_cases.py."""

from __future__ import annotations

import collections
import copy
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from converters.pytorch.torchzip import load_torch_zip, torch_zip_bytes
from ptycho_bridge.cli import main
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safezip import SafeZip

P = "model.autoencoder."


@pytest.fixture(scope="module")
def decoded(ptychodus_case: Path) -> dict:
    with SafeZip((ptychodus_case / "model.ckpt").read_bytes(), label="model.ckpt") as zf:
        return load_torch_zip(zf)


def test_spec_from_the_configs(ptychodus_case: Path) -> None:
    arch = read_archive(ptychodus_case / "model.ckpt")
    entry = arch.primary
    spec = entry.spec
    assert arch.era == "lightning-ckpt" and entry.payload["variant"] == "torchapi-devel"
    # c_outer = max(1, int(32·1·0.125)) = 4, so conv1 sees 32 − 4 = 28 channels; no border mask
    assert (spec.c_outer, spec.outer_width, spec.outer_mask, spec.amp_channels) == (4, 32, False, None)
    assert (spec.cbam_encoder, spec.amp_activation, spec.channels_in, spec.channels_out) == (True, "swish", 1, 1)
    assert entry.tensor_info["amp.conv1.weight"].shape == (1, 28, 3, 3)
    assert spec.to_dict()["outer_mask"] is False and "amp_channels" not in spec.to_dict()
    assert len(entry.tensors) == 61 and {"training.forward_model.alpha", "training.forward_model.beta"} <= set(entry.tensors)
    assert list(arch.torch_config)[:4] == ["model_config", "data_config", "training_config", "inference_config"]


def test_inspect_names_the_network(ptychodus_case: Path) -> None:
    import json

    from ptycho_bridge.schema import schema_errors

    result = CliRunner().invoke(main, ["inspect", str(ptychodus_case / "model.ckpt"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert schema_errors("inspect-report", doc) == []
    assert doc["network"]["upstream_variant"] == "torchapi-devel" and doc["network"]["outer_mask"] is False
    human = CliRunner().invoke(main, ["inspect", str(ptychodus_case / "model.ckpt")])
    assert human.exit_code == 0 and "torchapi-devel" in human.stdout and "outer_mask=False" in human.stdout


def test_upstream_main_checkpoint_is_not_called_torchapi(fixtures_dir: Path) -> None:
    arch = read_archive(fixtures_dir / "torch_N64_gs1" / "lightning.ckpt")
    assert arch.primary.spec.outer_mask is True and "variant" not in arch.primary.payload


# -- hostile checkpoints --------------------------------------------------------------------------------
def mc(**kw: Any) -> Callable[[dict], None]:
    return lambda d: d["hyper_parameters"]["model_config"].update(kw)


def dc(**kw: Any) -> Callable[[dict], None]:
    return lambda d: d["hyper_parameters"]["data_config"].update(kw)


def pop(*path: str) -> Callable[[dict], None]:
    def f(d: dict) -> None:
        for key in path[:-1]:
            d = d[key]
        del d[path[-1]]
    return f


def setsd(key: str, value: Callable[[dict], Any]) -> Callable[[dict], None]:
    return lambda d: d["state_dict"].__setitem__(key, value(d["state_dict"]))


def drop_cbam(d: dict) -> None:
    for k in [k for k in d["state_dict"] if ".attention." in k]:
        del d["state_dict"][k]


BIAS = P + "decoder_amp.amp.conv2.bias"
# (name, mutation, fragment of the one error line)
HOSTILE: list[tuple[str, Callable[[dict], Any], str]] = [
    # widths that disagree with tensors: the error names the deciding config field
    ("fraction_0.25", mc(decoder_last_c_outer_fraction=0.25),
     "axis 1 is 28 but the configs give 24 (decided by model_config.n_filters_scale, "
     "model_config.decoder_last_c_outer_fraction"),
    ("fraction_clamped_high", mc(decoder_last_c_outer_fraction=0.9), "configs give 16"),
    ("fraction_clamped_low", mc(decoder_last_c_outer_fraction=-1.0), "configs give 31"),
    ("n_filters_scale_2", mc(n_filters_scale=2),
     "'encoder.0.conv1.weight' axis 0 is 32 but the configs give 64 (decided by data_config.N, model_config.n_filters_scale)"),
    ("N_128", dc(N=128), "axis 0 is 32 but the configs give 16"),
    ("cbam_off_with_cbam_tensors", mc(cbam_encoder=False), "unexpected tensor(s) ['encoder.0.cbam.mlp1.bias'"),
    ("cbam_on_without_tensors", drop_cbam, "missing tensor 'encoder.0.cbam.mlp1.weight'"),
    ("cbam_bottleneck_without_tensors", mc(cbam_bottleneck=True), "missing tensor 'bottleneck.cbam.mlp1.weight'"),
    ("supervised_with_forward_model", mc(mode="Supervised"), "unexpected tensor(s) ['training.forward_model.alpha'"),
    ("num_datasets_2", mc(num_datasets=2),
     "'training.forward_model.alpha' axis 0 is 1 but the configs give 2 (decided by model_config.num_datasets"),
    ("alpha_missing", pop("state_dict", "model.forward_model.alpha"), "missing tensor 'training.forward_model.alpha'"),
    ("main_rect_scaler_added", setsd("model.forward_model.rect_scaler.s1", lambda s: np.ones(1, np.float32)),
     "unexpected tensor(s) ['training.forward_model.rect_scaler.s1']"),
    # inconsistent channel counts
    ("grid_2x2_with_C_1", dc(grid_size=(2, 2)), "data_config.C=1 but data_config.grid_size=(2, 2) means 4"),
    ("C_model_4", mc(C_model=4), "model_config.C_model=4"),
    ("C_forward_4", mc(C_forward=4), "model_config.C_forward=4"),
    ("grid_not_square", dc(grid_size=(1, 2)), "only square grids"),
    ("grid_zero", dc(grid_size=(0, 0)), "only square grids"),
    ("amp_channels_4", mc(decoder_last_amp_channels=4), "upstream asserts it is 1 or C_model=1"),
    ("N_96", dc(N=96), "data_config.N=96 is not supported"),
    # wrong types
    ("fraction_str", mc(decoder_last_c_outer_fraction="0.125"),
     "model_config.decoder_last_c_outer_fraction = '0.125' (str) is not a valid float"),
    ("fraction_nan", mc(decoder_last_c_outer_fraction=float("nan")), "decoder_last_c_outer_fraction = nan"),
    ("fraction_bool", mc(decoder_last_c_outer_fraction=True), "(bool) is not a valid float"),
    ("nfs_float", mc(n_filters_scale=1.0), "model_config.n_filters_scale = 1.0 (float) is not a valid int"),
    ("N_bool", dc(N=True), "data_config.N = True (bool)"),
    ("object_big_str", mc(object_big="yes"), "model_config.object_big = 'yes' (str) is not a valid bool"),
    ("grid_str", dc(grid_size="1x1"), "data_config.grid_size = '1x1'"),
    ("amp_activation_int", mc(amp_activation=5), "model_config.amp_activation = 5"),
    ("trainable_scale_negative", mc(intensity_scale_trainable=True, intensity_scale=-1.0),
     "model_config.intensity_scale=-1.0 must be a positive finite number"),
    # unsupported switches
    ("mode_semi", mc(mode="Semi"), "model_config.mode='Semi'"),
    ("shared_decoder", mc(use_shared_decoder=True), "use_shared_decoder=True"),
    ("cbam_decoder_inert", mc(cbam_decoder=True), "['cbam_decoder']=True"),
    ("eca_encoder_without_cbam", mc(eca_encoder=True, cbam_encoder=False), "['eca_encoder']=True"),
    ("batch_norm", mc(batch_norm=True), "batch_norm=True"),
    # extra / missing keys
    ("model_config_missing_field", pop("hyper_parameters", "model_config", "cbam_encoder"),
     "model_config: missing ['cbam_encoder']"),
    ("model_config_unknown_field", mc(foo=1), "unknown ['foo']"),
    ("inference_config_missing", pop("hyper_parameters", "inference_config"), "inference_config missing"),
    ("hyper_parameters_list", lambda d: d.__setitem__("hyper_parameters", [1, 2]), "hyper_parameters"),
    ("model_config_list", lambda d: d["hyper_parameters"].__setitem__("model_config", []), "model_config"),
    ("no_hyper_parameters", pop("hyper_parameters"), "not a Lightning checkpoint"),
    ("no_state_dict", pop("state_dict"), "not a Lightning checkpoint"),
    ("top_level_list", lambda d: [d], "checkpoint"),
    ("main_marker_with_torchapi_tensors", mc(use_legacy_decoder_channel_override=False), "requires [1, 31, 3, 3]"),
    ("unknown_autoencoder_key", setsd(P + "foo.weight", lambda s: np.zeros(1, np.float32)),
     "unexpected tensor(s) ['extra.autoencoder.foo.weight']"),
    ("conv_missing", pop("state_dict", BIAS), "missing tensor 'amp.conv2.bias'"),
    ("float64_tensor", setsd(BIAS, lambda s: s[BIAS].astype(np.float64)), "has dtype float64, expected float32"),
    ("bias_extra_axis", setsd(BIAS, lambda s: s[BIAS].reshape(1, 1)), "has 2 axes [1, 1], expected [1]"),
    ("value_not_a_tensor", setsd(BIAS, lambda s: 3), "is not a tensor (int)"),
    ("two_keys_one_tensor", setsd("autoencoder.decoder_amp.amp.conv2.bias", lambda s: s[BIAS]),
     "map twice onto canonical tensor 'amp.conv2.bias'"),
]


def hostile_file(decoded: dict, mutate: Callable[[dict], Any], path: Path) -> Path:
    d = copy.deepcopy(decoded)
    d["state_dict"] = collections.OrderedDict(d["state_dict"])
    result = mutate(d)
    path.write_bytes(torch_zip_bytes(d if result is None else result, prefix="hostile"))
    return path


@pytest.mark.parametrize("name,mutate,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_checkpoint_gives_one_error_line(decoded: dict, tmp_path: Path, name: str, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    path = hostile_file(decoded, mutate, tmp_path / "hostile.ckpt")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]


# still readable, with a warning naming the oddity (Lightning / upstream accept these)
LOADS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("probe_big_false", mc(probe_big=False), ""),
    ("object_big_false_g1", mc(object_big=False), ""),
    ("amp_activation_relu_means_silu", mc(amp_activation="relu"), "means SiLU upstream"),
    ("trainable_scale", mc(intensity_scale_trainable=True), "instead of input_scale_factor"),
    ("non_network_field_wrong_type", lambda d: d["hyper_parameters"]["training_config"].update(epochs="one"),
     "training_config.epochs = 'one'"),
    ("eca_encoder_with_cbam_not_built", mc(eca_encoder=True), ""),
    ("extra_hyper_parameters_key", lambda d: d["hyper_parameters"].__setitem__("generator_output", "amp_phase"),
     "keys outside the four configs ['generator_output']"),
    ("no_lightning_version", pop("pytorch-lightning_version"), "'pytorch-lightning_version' is None"),
    ("bad_lightning_version", lambda d: d.__setitem__("pytorch-lightning_version", "abc"), "InvalidVersion"),
]


@pytest.mark.parametrize("name,mutate,fragment", LOADS, ids=[h[0] for h in LOADS])
def test_odd_but_loadable_checkpoint_warns(decoded: dict, tmp_path: Path, name: str, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    arch = read_archive(hostile_file(decoded, mutate, tmp_path / "odd.ckpt"))
    warnings = " | ".join(arch.warnings + arch.primary.warnings)
    assert arch.primary.payload["variant"] == "torchapi-devel"
    assert fragment in warnings


@pytest.mark.parametrize("case,want", [("torch_N64_gs1", "main"), ("torch_N64_gs2", "main"), ("tf_N64_gs1", None)])
def test_inspect_names_the_upstream_network_variant(fixtures_dir, case, want) -> None:  # type: ignore[no-untyped-def]
    """Every PyTorch archive names its upstream network (main here; torchapi-devel above); TF has one network."""
    result = CliRunner().invoke(main, ["inspect", "--json", str(fixtures_dir / case / "wts.h5.zip")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["network"].get("upstream_variant") == want
