"""NetworkSpec's torchapi-devel fields: serialisation unchanged at their defaults, checks, per-head widths."""

from __future__ import annotations

import dataclasses

import pytest

from ptycho_bridge.errors import SpecError
from ptycho_bridge.spec.expressible import refusals
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors, torch_spec

KW = dict(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=True, amp_activation="sigmoid")


def test_defaults_are_left_out_of_to_dict() -> None:
    main = torch_spec(**KW)
    assert "outer_mask" not in main.to_dict() and "amp_channels" not in main.to_dict()
    assert NetworkSpec.from_dict(main.to_dict()) == main
    api = torch_spec(**KW, c_outer=4, amp_channels=1, outer_mask=False)
    d = api.to_dict()
    assert (d["outer_mask"], d["amp_channels"]) == (False, 1)
    assert NetworkSpec.from_dict(d) == api
    assert torch_spec(**KW, amp_channels=4).amp_channels is None  # = channels_out: the default


def test_per_head_widths() -> None:
    spec = torch_spec(**KW, c_outer=4, amp_channels=1, outer_mask=False)
    t = expected_tensors(spec)
    assert t["amp.conv1.weight"] == (1, 28, 3, 3) and t["amp.conv2.weight"] == (1, 32, 3, 3)
    assert t["phase.conv1.weight"] == (4, 28, 3, 3) and t["phase.conv2.bias"] == (4,)


@pytest.mark.parametrize("change,field", [({"amp_channels": 3}, "amp_channels"), ({"amp_channels": True}, "amp_channels"),
                                          ({"outer_mask": "no"}, "outer_mask")])
def test_check_rejects(change: dict, field: str) -> None:
    with pytest.raises(SpecError) as exc:
        dataclasses.replace(torch_spec(**KW), **change).check()
    assert exc.value.field == field


def test_unmasked_or_narrow_amp_networks_are_refused_where_they_cannot_be_expressed() -> None:
    api = torch_spec(**KW, c_outer=4, amp_channels=1, outer_mask=False)
    for target in ("tensorflow", "pytorch-archive", "engine:keras", "tensorflow-archive"):
        fields = {r.field for r in refusals(api, target)}
        assert "outer_mask" in fields, target
        # a one-channel amplitude head is a TF network too (upstream before c03673d): only upstream main's
        # torch bundle writer needs it widened first (spec.history.today_form)
        assert ("amp_channels" in fields) == (target == "pytorch-archive"), target
    assert refusals(api, "ptychodus-ckpt") == [] and refusals(api, "engine:torch") == []
    assert refusals(api, "engine:onnx") == []
    (first, *_) = refusals(torch_spec(**KW), "ptychodus-ckpt")
    assert first.field == "outer_mask"
