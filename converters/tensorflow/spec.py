"""Derive a :class:`NetworkSpec` from a TF ``ModelManager`` model: ``params.dill`` + the Keras graph.

Why: the spec is decided by params *and* by the payload (the Keras config). Every source that speaks
about a field must agree; a disagreement is an error naming the field and both values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from converters.tensorflow.keras_graph import KerasGraphInfo
from converters.tensorflow.layout import KERAS_CONFIG, MAX_PIXELS, PARAMS_MEMBER
from ptycho_bridge.errors import SpecError
from ptycho_bridge.formats.base import (
    MAX_FILTERS_SCALE,
    MAX_GRIDSIZE,
    require_agree,
    require_field,
    require_int,
    shown,
)
from ptycho_bridge.spec.network import (
    SUPPORTED_N,
    TF_AMP_ACTIVATIONS,
    NetworkSpec,
    expected_tensors,
    tf_padded_size,
    tf_spec,
)


def spec_from_tf(
    params: Mapping[str, Any], graph: KerasGraphInfo, *, member: str, config_member: str = KERAS_CONFIG
) -> NetworkSpec:
    """TF ``params.dill`` + ``config.json`` → spec; every overlapping field must agree."""
    p = dict(params)
    N = require_field(p, "N", int, member=member)
    gridsize = require_int(require_field(p, "gridsize", int, member=member), member=member, field="gridsize",
                           min=1, max=MAX_GRIDSIZE)
    nfs = require_int(require_field(p, "n_filters_scale", int, member=member), member=member, field="n_filters_scale",
                      min=1, max=MAX_FILTERS_SCALE)
    object_big = require_field(p, "object.big", bool, member=member)
    probe_big = require_field(p, "probe.big", bool, member=member)
    pad_object = require_field(p, "pad_object", bool, member=member)
    amp = require_field(p, "amp_activation", str, member=member)
    if N not in SUPPORTED_N:
        raise SpecError(f"N={shown(N)} is not supported by upstream (expected one of {SUPPORTED_N})", member=member, field="N")
    cfg = config_member
    require_agree("N", PARAMS_MEMBER, N, cfg, graph.N, member)
    require_agree("gridsize", f"{PARAMS_MEMBER} gridsize²", gridsize * gridsize, f"{cfg} input channels", graph.channels, member)
    require_agree("n_filters_scale", PARAMS_MEMBER, nfs, cfg, graph.n_filters_scale, member)
    require_agree("object.big", PARAMS_MEMBER, object_big, f"{cfg} (ReassemblePatchesLayer present)", graph.object_big, member)
    require_agree("pad_object", PARAMS_MEMBER, pad_object, f"{cfg} (channel slices present)", graph.pad_object, member)
    if pad_object:
        require_agree("probe.big", PARAMS_MEMBER, probe_big, f"{cfg} (outer branch present)", graph.outer_branch, member)
    require_agree("amp_activation", PARAMS_MEMBER, amp, cfg, graph.amp_activation, member)
    if amp not in TF_AMP_ACTIVATIONS:
        raise SpecError(f"amp_activation {amp!r} is not one TF builds ({TF_AMP_ACTIVATIONS})", member=member, field="amp_activation")
    padded = graph.padded_size
    if "offset" in p and "max_position_jitter" in p:
        offset = require_int(p["offset"], member=member, field="offset", min=0, max=MAX_PIXELS)
        jitter = require_int(p["max_position_jitter"], member=member, field="max_position_jitter", min=0, max=MAX_PIXELS)
        want = tf_padded_size(N, gridsize, offset, jitter)
        if padded is not None:
            require_agree("padded_size", f"{PARAMS_MEMBER} (N + (g-1)·offset + jitter)", want, cfg, padded, member)
        elif object_big:
            # upstream before the layer recorded it (e.g. cb46e91) computed it from params.get_padded_size()
            padded = want
    amp_channels = _amp_channels(graph, object_big=object_big, gridsize=gridsize, member=member, cfg=cfg)
    spec = tf_spec(
        N=N,
        gridsize=gridsize,
        n_filters_scale=nfs,
        object_big=object_big,
        probe_big=probe_big,
        pad_object=pad_object,
        amp_activation=amp,
        use_polar=graph.use_polar,
        padded_size=padded,
        amp_channels=amp_channels,
    )
    if not graph.outer_mask:  # upstream before a6e1019 (2024-08-20) added the outer branch unmasked
        spec = replace(spec, outer_mask=False)
    spec.check()
    _check_filters(spec, graph, member=member, cfg=cfg)
    return spec


def _head_width(graph: KerasGraphInfo, head: str, *, member: str, cfg: str) -> int:
    widths = graph.head_widths(head)
    if len(widths) != 1:
        raise SpecError(f"the {head} head's final convs have different widths {sorted(widths)}",
                        member=cfg, field=f"{head}.filters")
    return widths.pop()


def _amp_channels(graph: KerasGraphInfo, *, object_big: bool, gridsize: int, member: str, cfg: str) -> int:
    """The amplitude head's width as the archive's network was built (``ptycho_bridge.spec.history``).

    The phase heads are ``gridsize²`` wide with ``object.big`` (else 1) in every upstream version, so
    their width is cross-checked against ``params.dill``; the amplitude heads were ``Conv2D(1)`` at every
    gridsize before upstream c03673d (2026-02-10) and ``Cout`` since, so 1 and ``Cout`` are both accepted.
    """
    cout = gridsize * gridsize if object_big else 1
    phase = _head_width(graph, "phase", member=member, cfg=cfg)
    require_agree("phase head channels", f"{PARAMS_MEMBER} (gridsize² with object.big, else 1)", cout,
                  f"{cfg} (phase head Conv2D filters)", phase, member)
    amp = _head_width(graph, "amp", member=member, cfg=cfg)
    if amp not in (1, cout):
        raise SpecError(f"the amp head's Conv2D filters are {amp}; upstream built 1 (before c03673d, "
                        f"2026-02-10) or the phase head's {cout}", member=cfg, field="amp.filters")
    return amp


def _check_filters(spec: NetworkSpec, graph: KerasGraphInfo, *, member: str, cfg: str) -> None:
    """Every conv's ``filters`` in the config equals the output width the derived spec gives it."""
    want = expected_tensors(spec)
    for prefix, filters in graph.conv_filters:
        shape = want.get(f"{prefix}.weight")
        if shape is None:
            raise SpecError(f"conv {prefix!r} is not part of the network the spec describes",
                            member=cfg, field=f"{prefix}.filters")
        if shape[0] != filters:
            raise SpecError(f"conv {prefix!r} has {filters} filters but the spec (N={spec.N}, "
                            f"n_filters_scale={spec.n_filters_scale}) gives it {shape[0]}",
                            member=cfg, field=f"{prefix}.filters")
