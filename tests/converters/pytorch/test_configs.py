"""converters/pytorch/configs.py: the torch configs a writer emits (c_outer override, refusals)."""

from __future__ import annotations

import pytest

from converters.pytorch.configs import c_outer_override, torch_config_for
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.spec.network import NetworkSpec, tf_spec
from tests._support import torch_twin_of_tf_spec


# -- torch config and c_outer override ---------------------------------------------------------
@pytest.mark.parametrize("nfs", [1, 2, 3, 5, 6, 7])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_c_outer_override_gives_four_channels_under_upstreams_formula(nfs: int, gridsize: int) -> None:
    spec = torch_twin_of_tf_spec(n_filters_scale=nfs, gridsize=gridsize)
    mc = torch_config_for(spec, {})["model_config"]
    cout = gridsize * gridsize
    if cout == 4:  # torch's default c_outer = Cout already equals TF's 4
        assert mc["use_legacy_decoder_channel_override"] is False
        return
    assert mc["use_legacy_decoder_channel_override"] is True
    frac = mc["decoder_last_c_outer_fraction"]
    assert max(1, int(32 * nfs * min(max(frac, 0.0), 0.5))) == 4  # ../shared/docs/upstream-architecture.md §2.3
    assert mc["decoder_last_amp_channels"] == cout


def test_c_outer_override_refuses_more_than_half_the_latent() -> None:
    spec = NetworkSpec(**{**torch_twin_of_tf_spec().to_dict(), "c_outer": 20})
    with pytest.raises(ConversionRefused, match="c_outer=20"):
        c_outer_override(spec)


def test_torch_config_refuses_networks_torch_cannot_build() -> None:
    src = tf_spec(N=128, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                  amp_activation="sigmoid")
    with pytest.raises(ConversionRefused, match="outer_width=16") as info:
        torch_config_for(src, {})
    assert info.value.field == "outer_width"
