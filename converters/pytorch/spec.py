"""Derive a :class:`NetworkSpec` from a torch model: params, the torch ``model_config`` and the tensor shapes.

Why: upstream torch's loader keeps random weights when shapes disagree; here every source that speaks
about a field must agree, and a disagreement is an error naming the field and both values.
"""

from __future__ import annotations

from typing import Any, Mapping

from ptycho_bridge.errors import SpecError, UnsupportedError
from ptycho_bridge.formats.base import (
    MAX_FILTERS_SCALE,
    require_bool,
    require_field,
    require_float,
    require_int,
    require_str,
    shown,
)
from ptycho_bridge.spec.network import (
    SUPPORTED_N,
    NetworkSpec,
    check_tensors,
    torch_amp_activation,
    torch_legacy_c_outer,
    torch_spec,
)


def spec_from_torch(
    *,
    N: int,
    gridsize: int,
    params: Mapping[str, Any],
    model_config: Mapping[str, Any] | None,
    shapes: Mapping[str, tuple[int, ...]],
    member: str,
) -> tuple[NetworkSpec, list[str]]:
    """Torch configs (+ params.dill) → spec, then strict tensor-shape check. Returns (spec, warnings)."""
    warnings: list[str] = []
    mc = dict(model_config or {})

    def pick(cfg_key: str, param_key: str, kind: type) -> Any:
        if cfg_key in mc:
            value = require_field(mc, cfg_key, kind, member=member)
            if param_key in params and param_key not in ("amp_activation",):
                other = require_field(dict(params), param_key, kind, member=member)
                if other != value:
                    raise SpecError(f"torch model_config says {shown(value)} but params says {shown(other)}",
                                    member=member, field=cfg_key)
            return value
        return require_field(dict(params), param_key, kind, member=member)

    if N not in SUPPORTED_N:
        raise SpecError(f"N={shown(N)} is not supported (expected one of {SUPPORTED_N})", member=member, field="N")
    def flag(key: str) -> bool:  # an optional model_config flag: absent/None is False, else a real bool
        value = mc.get(key)
        return False if value is None else require_bool(value, member=member, field=f"model_config.{key}")

    def text(key: str, default: str | None) -> str | None:
        value = mc.get(key, default)
        return None if value is None else require_str(value, member=member, field=f"model_config.{key}")

    architecture = mc["architecture"] if "architecture" in mc else params.get("architecture", "cnn")
    architecture = require_str(architecture, member=member, field="architecture")
    if architecture != "cnn":
        raise UnsupportedError(f"architecture {architecture!r}: only the 'cnn' family is supported", member=member, field="architecture")
    mode = text("cnn_output_mode", "amp_phase")
    if mode != "amp_phase":
        raise UnsupportedError(f"cnn_output_mode {mode!r}: only 'amp_phase' is supported", member=member, field="cnn_output_mode")
    if flag("use_shared_decoder"):
        raise UnsupportedError("use_shared_decoder=True is a different network", member=member, field="use_shared_decoder")
    nfs = require_int(pick("n_filters_scale", "n_filters_scale", int), member=member, field="n_filters_scale",
                      min=1, max=MAX_FILTERS_SCALE)
    object_big = pick("object_big", "object.big", bool)
    probe_big = pick("probe_big", "probe.big", bool)
    amp_raw = mc.get("amp_activation", params.get("amp_activation"))
    if not isinstance(amp_raw, str):
        raise SpecError(f"amp_activation missing or not a string ({amp_raw!r})", member=member, field="amp_activation")
    amp, notes = torch_amp_activation(amp_raw)
    warnings.extend(notes)
    if model_config is None:
        cbam_encoder = any(".cbam." in k and k.startswith("encoder.") for k in shapes)
        cbam_bottleneck = any(k.startswith("bottleneck.cbam.") for k in shapes)
        batch_norm = any(".bn" in k for k in shapes)
        warnings.append(
            "no torch model_config in the archive: cbam_encoder/cbam_bottleneck/batch_norm inferred from the "
            f"state_dict keys ({cbam_encoder}/{cbam_bottleneck}/{batch_norm})"
        )
    else:
        cbam_encoder, cbam_bottleneck, batch_norm = (
            require_bool(mc.get(key, False), member=member, field=f"model_config.{key}")
            for key in ("cbam_encoder", "cbam_bottleneck", "batch_norm"))
        for unused in ("eca_encoder", "cbam_decoder", "eca_decoder", "spatial_decoder"):
            if flag(unused):
                warnings.append(f"torch {unused}=True: built upstream but never applied (numerically inert)")
        if flag("intensity_scale_trainable"):
            warnings.append(
                "torch intensity_scale_trainable=True: forward_predict multiplies by exp(log_scale) instead of input_scale_factor"
            )
        if text("parity_scale_mode", "off") not in ("off", None):
            warnings.append(f"parity_scale_mode={mc.get('parity_scale_mode')!r} changes forward_predict scaling")
    channels = gridsize * gridsize
    cout = channels if object_big else 1
    c_outer = cout
    if flag("use_legacy_decoder_channel_override"):
        frac = require_float(mc.get("decoder_last_c_outer_fraction", 0.0), member=member,
                             field="model_config.decoder_last_c_outer_fraction", min=0.0, max=1.0)
        c_outer = torch_legacy_c_outer(nfs, frac)
        amp_channels = require_int(mc.get("decoder_last_amp_channels", cout), member=member,
                                   field="model_config.decoder_last_amp_channels", min=1, max=4096)
        if amp_channels != cout:
            raise UnsupportedError(
                f"decoder_last_amp_channels={amp_channels} differs from the head channels {cout}",
                member=member,
                field="decoder_last_amp_channels",
            )
    spec = torch_spec(
        N=N,
        gridsize=gridsize,
        n_filters_scale=nfs,
        object_big=object_big,
        probe_big=probe_big,
        amp_activation=amp,
        c_outer=c_outer,
        cbam_encoder=cbam_encoder,
        cbam_bottleneck=cbam_bottleneck,
        batch_norm=batch_norm,
    )
    if mc.get("pad_object") is False or params.get("pad_object") is False:
        warnings.append("pad_object=False is ignored by upstream torch (it always builds the padded head)")
    spec.check()
    # only training-only tensors (outside the autoencoder) may go unchecked; an unknown autoencoder
    # tensor is an error unless it is a batch-norm tensor of a batch_norm network
    check_tensors(spec, shapes, member=member, allow_extra_prefixes=("training.",))
    return spec, warnings
