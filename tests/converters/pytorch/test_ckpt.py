"""The torchapi-devel Lightning checkpoint writer: exact round trip, fresh checkpoints, refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from converters.pytorch.ckpt import (
    c_outer_fraction,
    checkpoint_object,
    encode_checkpoint,
    torchapi_configs,
    torchapi_spec,
    zip_prefix,
)
from converters.pytorch.layout import CKPT_TOP_LEVEL_ORDER, LIGHTNING_VERSION, TORCHAPI_FIELDS
from converters.pytorch.torchzip import load_torch_zip
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.spec.network import torch_spec


def _decode(blob: bytes) -> dict:
    with SafeZip(blob, label="x.ckpt") as zf:
        return load_torch_zip(zf)


@pytest.fixture(scope="module")
def source(ptychodus_case: Path):  # type: ignore[no-untyped-def]
    arch = read_archive(ptychodus_case / "model.ckpt")
    return arch, _decode((ptychodus_case / "model.ckpt").read_bytes())


def test_round_trip_tensors_and_configs_bit_for_bit(source) -> None:  # type: ignore[no-untyped-def]
    arch, original = source
    configs = {k: v for k, v in arch.torch_config.items() if k != "hyper_parameters"}
    obj, notes = checkpoint_object(arch.primary.spec, arch.primary.tensors, configs=configs)
    assert notes == []
    back = _decode(encode_checkpoint(obj, filename="model.ckpt"))
    assert list(back) == list(CKPT_TOP_LEVEL_ORDER) == list(original)
    assert list(back["state_dict"]) == list(original["state_dict"])
    for key, value in original["state_dict"].items():
        assert back["state_dict"][key].dtype == value.dtype and np.array_equal(back["state_dict"][key], value), key
    assert repr(back["hyper_parameters"]) == repr(original["hyper_parameters"])  # types too (tuples stay tuples)
    assert back["pytorch-lightning_version"] == LIGHTNING_VERSION
    groups = back["optimizer_states"][0]["param_groups"]
    assert groups[0]["params"] == list(range(61)) and groups[0].keys() == original["optimizer_states"][0]["param_groups"][0].keys()


def test_fresh_checkpoint_fills_training_tensors_and_reads_back(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    arch, _ = source
    net = {k: v for k, v in arch.primary.tensors.items() if not k.startswith("training.")}
    obj, notes = checkpoint_object(arch.primary.spec, net)
    assert any("filled with ones" in n for n in notes)
    assert {k: list(v) for k, v in obj["hyper_parameters"].items()} == {k: list(v) for k, v in TORCHAPI_FIELDS.items()}
    path = tmp_path / "fresh.ckpt"
    path.write_bytes(encode_checkpoint(obj, filename=path.name))
    back = read_archive(path)
    assert back.primary.spec == arch.primary.spec
    assert all(np.array_equal(back.primary.tensors[k], v) for k, v in net.items())
    assert np.array_equal(back.primary.tensors["training.forward_model.alpha"], np.ones(1, np.float32))


def test_main_spec_becomes_torchapi_only_when_the_outer_branch_is_unused() -> None:
    kw = dict(N=64, gridsize=2, n_filters_scale=1, object_big=True, amp_activation="sigmoid")
    unused = torch_spec(probe_big=False, **kw)
    assert torchapi_spec(unused) == dataclasses.replace(unused, outer_mask=False)
    with pytest.raises(ConversionRefused) as exc:
        torchapi_spec(torch_spec(probe_big=True, **kw))
    assert exc.value.field == "outer_mask" and "border" in str(exc.value)


@pytest.mark.parametrize("change,field", [({"c_outer": 17}, "c_outer"), ({"amp_activation": "softplus"}, "amp_activation"),
                                          ({"batch_norm": True}, "batch_norm")])
def test_writer_refusals_name_the_field(source, change: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    arch, _ = source
    with pytest.raises(ConversionRefused) as exc:
        checkpoint_object(dataclasses.replace(arch.primary.spec, **change), arch.primary.tensors)
    assert exc.value.field == field


def test_writer_rejects_bad_tensors(source) -> None:  # type: ignore[no-untyped-def]
    arch, _ = source
    spec, tensors = arch.primary.spec, arch.primary.tensors
    with pytest.raises(SpecError, match="dtype float64"):
        checkpoint_object(spec, {**tensors, "amp.conv2.bias": tensors["amp.conv2.bias"].astype(np.float64)})
    with pytest.raises(SpecError, match=r"requires \[1, 28, 3, 3\]"):
        checkpoint_object(spec, {**tensors, "amp.conv1.weight": np.zeros((1, 31, 3, 3), np.float32)})


def test_configs_take_network_fields_from_the_spec() -> None:
    spec = torch_spec(N=128, gridsize=2, n_filters_scale=2, object_big=True, probe_big=False, amp_activation="sigmoid",
                      c_outer=5, amp_channels=1, outer_mask=False)
    cfg, notes = torchapi_configs(spec, {"model_config": {"n_filters_scale": 1, "not_a_field": 3, "epochs": 2}})
    mc, dc = cfg["model_config"], cfg["data_config"]
    assert (dc["N"], dc["C"], dc["grid_size"], mc["C_model"], mc["n_filters_scale"]) == (128, 4, (2, 2), 4, 2)
    assert (mc["amp_activation"], mc["decoder_last_amp_channels"], mc["probe_big"]) == ("sigmoid", 1, False)
    assert int(64 * mc["decoder_last_c_outer_fraction"]) == 5 == c_outer_fraction(spec) * 64 // 1
    assert any("not_a_field" in n for n in notes)


def test_zip_prefix_is_the_file_stem() -> None:
    assert zip_prefix("model.ckpt") == "model" and zip_prefix("dir/x y.ckpt") == "archive"
