"""Ptychodus 1.7 Lightning checkpoints (upstream PtychoPINN ``torchapi-devel``): hyper_parameters → NetworkSpec.

Input: ``hyper_parameters`` as plain Python values, decoded by :func:`converters.pytorch.torchzip.load_torch_zip`
(never ``torch.load``). Output: a :class:`~ptycho_bridge.spec.network.NetworkSpec` plus warnings, and a width-by-width check of the
state_dict whose error names the config field(s) that decide the mismatching axis.

How torchapi-devel's ``PtychoPINN_Lightning`` (commit a749439, used by Ptychodus 1.7) builds the CNN
(derived from the fixture's 31 ``model_config`` fields and confirmed by ``forward_golden.npz``; the
upstream source of that branch is not in the reference index, the closest stored version of
``ptycho_torch/model.py`` is an older main with the same ``Decoder_last``):

======================  ===========================================  ======================================
what                    torchapi-devel                               upstream main (project's torch_spec)
======================  ===========================================  ======================================
encoder input           ``C_model if object_big else 1``             same
encoder widths F_i      ``nfs·2048/N·2^i`` (N ∈ 64/128/256)          same
encoder CBAM            ``cbam_encoder`` (ECA built only if CBAM     same
                        off and ``eca_encoder``; never applied)
bottleneck CBAM         ``cbam_bottleneck``                          same
decoder widths G_d      ``nfs·32·2^(D−1−d)``, input ``128·nfs``      same
decoder attention       ``cbam/eca/spatial_decoder``: built, never   same
                        called, but their weights are in state_dict
c_outer                 ``max(1, int(32·nfs·clamp(f, 0, 0.5)))``,    ``Cout`` unless
                        f = ``decoder_last_c_outer_fraction``,       ``use_legacy_decoder_channel_override``
                        ALWAYS (no override field exists)            (then the same formula)
amp head Cout           ``decoder_last_amp_channels`` (∈ {1, C})     ``Cout`` unless override
phase head Cout         ``C_model if object_big else 1``             same
outer up-block width    ``32·nfs``                                   same
outer branch            ``x1 + silu(conv2(up(h[:, −c:])))``          ``x1 + silu(…)·(1 − M)`` border mask
                        — NO border mask
amp activation          sigmoid if 'sigmoid' else SiLU               same
phase activation        π·tanh                                       same
batch norm              encoder, phase decoder, phase head           same
forward_predict         ``x·input_scale_factor`` (or ·exp(log_scale) same (+ parity_scale_mode, absent here)
                        if intensity_scale_trainable) → amp·e^{iφ}
training tensors        ``forward_model.alpha/beta [num_datasets]``  + ``rect_scaler.s1/s2``
                        (Unsupervised only)
======================  ===========================================  ======================================

The variant is decided by the config field sets, not guessed: ``torchapi-devel`` iff the four configs
have exactly the field sets below; ``main`` iff ``model_config`` has
``use_legacy_decoder_channel_override`` (the project's existing ``spec_from_torch`` handles it);
anything else is refused (its decoder semantics are unknown). Field tables, the template and the
variant names live in :mod:`converters.pytorch.layout`; the reader is
:class:`converters.pytorch.read.LightningCheckpointReader`, the writer :mod:`converters.pytorch.ckpt`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.layout import (
    MAIN_MARKER_FIELD,
    TORCHAPI_CONFIG_KEYS,
    TORCHAPI_FIELDS,
    TORCHAPI_FORWARD_AUX,
    TORCHAPI_MODES,
    TORCHAPI_NETWORK_FIELDS,
    VARIANT_MAIN,
    VARIANT_TORCHAPI,
)
from ptycho_bridge.errors import FormatError, SpecError, UnsupportedError
from ptycho_bridge.spec.network import (
    CBAM_REDUCTION,
    CBAM_SPATIAL_KERNEL,
    SUPPORTED_N,
    NetworkSpec,
    expected_tensors,
    torch_legacy_c_outer,
    torch_spec,
)

_F, _I, _B, _S, _N = "float", "int", "bool", "str", "none"
CONFIG_KEYS = TORCHAPI_CONFIG_KEYS

def is_kind(value: Any, kind: str) -> bool:
    """Whether a decoded config value is of one of :data:`TORCHAPI_FIELDS`' kinds (bool is no int)."""
    if kind == _N:
        return value is None
    if kind == _B:
        return isinstance(value, bool)
    if kind == _I:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _F:  # dataclass float fields may legitimately hold ints (e.g. weight_decay=0)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == _S:
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, np.ndarray)
    if kind == "pair_int":
        return isinstance(value, (tuple, list)) and len(value) == 2 and all(is_kind(v, _I) for v in value)
    if kind == "pair_float":
        return isinstance(value, (tuple, list)) and len(value) == 2 and all(is_kind(v, _F) for v in value)
    if kind == "list_str":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise AssertionError(kind)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def looks_torchapi(hp: Mapping[str, Any]) -> bool:
    """Whether ``hp`` should be judged as a torchapi-devel checkpoint: a ``model_config`` with
    torchapi-devel's decoder fields (``C_model``, ``decoder_last_c_outer_fraction``) and without main's
    ``use_legacy_decoder_channel_override``. :func:`detect_variant` then accepts or names what differs;
    anything else keeps the upstream-main reading (whose behaviour predates the torchapi variant)."""
    mc = hp.get("model_config")
    return isinstance(mc, dict) and MAIN_MARKER_FIELD not in mc and "C_model" in mc and \
        "decoder_last_c_outer_fraction" in mc


def detect_variant(hp: Any, *, member: str = "hyper_parameters") -> str:
    """``'torchapi-devel'`` or ``'main'``; anything else raises :class:`UnsupportedError`."""
    if not isinstance(hp, dict):
        raise FormatError(f"hyper_parameters is {type(hp).__name__}, expected a dict", member=member)
    for key in ("model_config", "data_config"):
        if not isinstance(hp.get(key), dict):
            raise FormatError(f"hyper_parameters[{key!r}] is missing or not a dict ({type(hp.get(key)).__name__})",
                              member=member, field=key)
    mc = hp["model_config"]
    if MAIN_MARKER_FIELD in mc:
        return VARIANT_MAIN
    have = {k: set(hp[k]) if isinstance(hp.get(k), dict) else None for k in CONFIG_KEYS}
    if all(have[k] == set(TORCHAPI_FIELDS[k]) for k in CONFIG_KEYS):
        return VARIANT_TORCHAPI
    diffs = []
    for k in CONFIG_KEYS:
        if have[k] is None:
            diffs.append(f"{k} missing")
            continue
        missing = sorted(set(TORCHAPI_FIELDS[k]) - have[k])
        extra = sorted(have[k] - set(TORCHAPI_FIELDS[k]))
        if missing or extra:
            diffs.append(f"{k}: missing {missing[:6]}, unknown {extra[:6]}")
    raise UnsupportedError(
        "checkpoint configs match no known upstream network variant (torchapi-devel needs exactly its "
        f"dataclass fields; main has use_legacy_decoder_channel_override): {'; '.join(diffs)}",
        member=member,
    )


def _field(cfg: Mapping[str, Any], section: str, name: str, kinds: tuple[str, ...], member: str) -> Any:
    if name not in cfg:
        raise FormatError(f"required field {section}.{name} is missing", member=member, field=f"{section}.{name}")
    value = cfg[name]
    if not any(is_kind(value, k) for k in kinds):
        raise SpecError(f"{section}.{name} = {_short(value)} ({type(value).__name__}) is not a valid "
                        f"{'/'.join(kinds)}", member=member, field=f"{section}.{name}")
    return value


def spec_from_hyper_parameters(
    hp: Mapping[str, Any], *, member: str = "hyper_parameters"
) -> tuple[NetworkSpec, list[str]]:
    """torchapi-devel ``hyper_parameters`` → (spec, warnings). Field by field (see module table)."""
    variant = detect_variant(hp, member=member)
    if variant != VARIANT_TORCHAPI:
        raise UnsupportedError(f"variant {variant!r}: use the project's spec_from_torch", member=member)
    warnings: list[str] = []
    # every field's type: network fields are errors, the rest warnings (they cannot change the graph,
    # but upstream would receive them)
    for section, table in TORCHAPI_FIELDS.items():
        cfg = hp[section]
        for name, kinds in table.items():
            if not any(is_kind(cfg[name], k) for k in kinds):
                if name in TORCHAPI_NETWORK_FIELDS.get(section, ()):
                    raise SpecError(f"{section}.{name} = {_short(cfg[name])} ({type(cfg[name]).__name__}) is not "
                                    f"a valid {'/'.join(kinds)}", member=member, field=f"{section}.{name}")
                warnings.append(f"{section}.{name} = {_short(cfg[name])} is not a {'/'.join(kinds)} "
                                "(not a network field; upstream receives it as is)")
    extra_top = sorted(set(hp) - set(CONFIG_KEYS))
    if extra_top:
        warnings.append(f"hyper_parameters has keys outside the four configs {extra_top} (torchapi-devel "
                        "saves none; Lightning drops unknown ones)")
    mc, dc = hp["model_config"], hp["data_config"]
    M, D = "model_config", "data_config"

    N = _field(dc, D, "N", (_I,), member)
    if N not in SUPPORTED_N:
        raise SpecError(f"data_config.N={N} is not supported (upstream builds only {SUPPORTED_N})", member=member,
                        field="data_config.N")
    grid = _field(dc, D, "grid_size", ("pair_int",), member)
    if grid[0] != grid[1] or grid[0] < 1:
        raise UnsupportedError(f"data_config.grid_size={tuple(grid)}: only square grids g×g, g ≥ 1",
                               member=member, field="data_config.grid_size")
    g = int(grid[0])
    C = _field(dc, D, "C", (_I,), member)
    C_model = _field(mc, M, "C_model", (_I,), member)
    C_forward = _field(mc, M, "C_forward", (_I,), member)
    for name, value in (("data_config.C", C), ("model_config.C_model", C_model), ("model_config.C_forward", C_forward)):
        if value != g * g:
            raise SpecError(f"{name}={value} but data_config.grid_size={tuple(grid)} means {g * g} channels "
                            "(upstream builds the network from C_model and feeds it C)", member=member, field=name)
    nfs = _field(mc, M, "n_filters_scale", (_I,), member)
    if nfs < 1:
        raise SpecError(f"model_config.n_filters_scale={nfs} must be >= 1", member=member,
                        field="model_config.n_filters_scale")
    object_big = _field(mc, M, "object_big", (_B,), member)
    probe_big = _field(mc, M, "probe_big", (_B,), member)
    mode = _field(mc, M, "mode", (_S,), member)
    if mode not in TORCHAPI_MODES:
        raise UnsupportedError(f"model_config.mode={mode!r} (upstream knows 'Unsupervised'/'Supervised')",
                               member=member, field="model_config.mode")
    num_datasets = _field(mc, M, "num_datasets", (_I,), member)
    if num_datasets < 1:
        raise SpecError(f"model_config.num_datasets={num_datasets} must be >= 1", member=member,
                        field="model_config.num_datasets")
    amp_raw = _field(mc, M, "amp_activation", (_S,), member)
    amp = "sigmoid" if amp_raw == "sigmoid" else "swish"
    if amp_raw not in ("sigmoid", "silu", "swish"):
        warnings.append(f"model_config.amp_activation={amp_raw!r} means SiLU upstream (anything but 'sigmoid')")
    if _field(mc, M, "use_shared_decoder", (_B,), member):
        raise UnsupportedError("model_config.use_shared_decoder=True: not verified for torchapi-devel (no "
                               "fixture, no source); refused", member=member, field="model_config.use_shared_decoder")
    cbam_encoder = _field(mc, M, "cbam_encoder", (_B,), member)
    cbam_bottleneck = _field(mc, M, "cbam_bottleneck", (_B,), member)
    batch_norm = _field(mc, M, "batch_norm", (_B,), member)
    inert = [f for f in ("cbam_decoder", "eca_decoder", "spatial_decoder") if _field(mc, M, f, (_B,), member)]
    if _field(mc, M, "eca_encoder", (_B,), member) and not cbam_encoder:
        inert.append("eca_encoder")
    if inert:
        raise UnsupportedError(
            f"model_config {inert}=True: upstream builds these attention modules (weights in the state_dict) but "
            "never applies them; their tensor shapes are not verified for torchapi-devel, so refused",
            member=member, field=f"model_config.{inert[0]}")
    frac = _field(mc, M, "decoder_last_c_outer_fraction", (_F,), member)
    c_outer = torch_legacy_c_outer(nfs, float(frac))
    amp_channels = _field(mc, M, "decoder_last_amp_channels", (_I,), member)
    phase_channels = C_model if object_big else 1
    if amp_channels not in (1, C_model):  # upstream: assert num_channels in [1, C_model]
        raise SpecError(f"model_config.decoder_last_amp_channels={amp_channels} (upstream asserts it is 1 or "
                        f"C_model={C_model})", member=member, field="model_config.decoder_last_amp_channels")
    if amp_channels not in (1, phase_channels):
        raise UnsupportedError(
            f"model_config.decoder_last_amp_channels={amp_channels} with object_big=False (phase head emits 1): "
            "the output would broadcast phase over amp channels; refused",
            member=member, field="model_config.decoder_last_amp_channels")
    if _field(mc, M, "intensity_scale_trainable", (_B,), member):
        scale = mc.get("intensity_scale")
        if not (is_kind(scale, _F) and scale > 0):
            raise SpecError(f"model_config.intensity_scale={_short(scale)} must be a positive finite number when "
                            "intensity_scale_trainable=True (forward_predict multiplies by it)", member=member,
                            field="model_config.intensity_scale")
        warnings.append("model_config.intensity_scale_trainable=True: forward_predict multiplies by "
                        "exp(ln(model_config.intensity_scale)) instead of input_scale_factor")
    base = torch_spec(
        N=N, gridsize=g, n_filters_scale=nfs, object_big=object_big, probe_big=probe_big, amp_activation=amp,
        c_outer=c_outer, cbam_encoder=cbam_encoder, cbam_bottleneck=cbam_bottleneck, batch_norm=batch_norm,
        amp_channels=amp_channels, outer_mask=False,
    )
    spec = base
    spec.check()
    return spec, warnings


# -- the width-by-width check ------------------------------------------------------------------------
def expected_with_sources(spec: NetworkSpec, hp: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """Canonical name → (shape, per-axis "decided by") for every tensor the checkpoint must hold.

    Includes the training-only ``training.forward_model.alpha/beta`` (Unsupervised). Cross-checked
    against :func:`ptycho_bridge.spec.network.expected_tensors` so the two can never drift.
    """
    nfs = "model_config.n_filters_scale"
    enc = f"data_config.N, {nfs}"
    cin0 = "model_config.C_model, model_config.object_big"
    outer = f"{nfs}, model_config.decoder_last_c_outer_fraction"
    cout = {"amp": "model_config.decoder_last_amp_channels", "phase": "model_config.C_model, model_config.object_big"}
    K = "3×3 kernel (fixed)"
    out: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}

    def conv(name: str, o: int, i: int, so: str, si: str) -> None:
        out[f"{name}.weight"] = ((o, i, 3, 3), (so, si, K, K))
        out[f"{name}.bias"] = ((o,), (so,))

    prev, prev_src = spec.channels_in, cin0
    for i, w in enumerate(spec.encoder_widths):
        conv(f"encoder.{i}.conv1", w, prev, enc, prev_src)
        conv(f"encoder.{i}.conv2", w, w, enc, enc)
        if spec.cbam_encoder:
            h, hs = w // CBAM_REDUCTION, f"{enc} (÷{CBAM_REDUCTION}), model_config.cbam_encoder"
            out[f"encoder.{i}.cbam.mlp1.weight"] = ((h, w), (hs, enc))
            out[f"encoder.{i}.cbam.mlp1.bias"] = ((h,), (hs,))
            out[f"encoder.{i}.cbam.mlp2.weight"] = ((w, h), (enc, hs))
            out[f"encoder.{i}.cbam.mlp2.bias"] = ((w,), (enc,))
            k = CBAM_SPATIAL_KERNEL
            out[f"encoder.{i}.cbam.spatial.weight"] = ((1, 2, k, k), ("1", "2 (max, mean)", "7", "7"))
        prev, prev_src = w, enc
    if spec.cbam_bottleneck:
        w, bs = prev, f"{nfs} (128·nfs)"
        h, hs = w // CBAM_REDUCTION, f"{nfs} (8·nfs), model_config.cbam_bottleneck"
        out["bottleneck.cbam.mlp1.weight"] = ((h, w), (hs, bs))
        out["bottleneck.cbam.mlp1.bias"] = ((h,), (hs,))
        out["bottleneck.cbam.mlp2.weight"] = ((w, h), (bs, hs))
        out["bottleneck.cbam.mlp2.bias"] = ((w,), (bs,))
        out["bottleneck.cbam.spatial.weight"] = ((1, 2, 7, 7), ("1", "2 (max, mean)", "7", "7"))
    latent = spec.latent_width
    for head in ("amp", "phase"):
        cin, cs = 128 * spec.n_filters_scale, f"{nfs} (128·nfs)"
        for d, w in enumerate(spec.decoder_widths):
            conv(f"{head}.decoder.{d}.conv1", w, cin, enc, cs)
            conv(f"{head}.decoder.{d}.conv2", w, w, enc, enc)
            cin, cs = w, enc
        co = spec.head_channels(head)
        conv(f"{head}.conv1", co, latent - spec.c_outer, cout[head], outer + " (32·nfs − c_outer)")
        conv(f"{head}.outer.conv1", spec.outer_width, spec.c_outer, f"{nfs} (32·nfs)", outer + " (c_outer)")
        conv(f"{head}.outer.conv2", spec.outer_width, spec.outer_width, f"{nfs} (32·nfs)", f"{nfs} (32·nfs)")
        conv(f"{head}.conv2", co, spec.outer_width, cout[head], f"{nfs} (32·nfs)")
    if spec.batch_norm:
        raise UnsupportedError("batch_norm=True: the canonical tensor index has no decoder/head batch-norm names",
                               field="model_config.batch_norm")
    plain = expected_tensors(spec)
    net_only = {k: v[0] for k, v in out.items()}
    assert net_only == plain, sorted(set(net_only.items()) ^ set(plain.items()))
    if hp["model_config"]["mode"] == "Unsupervised":
        n = int(hp["model_config"]["num_datasets"])
        for aux in TORCHAPI_FORWARD_AUX:
            out[f"training.{aux}"] = ((n,), ("model_config.num_datasets (mode='Unsupervised')",))
    return out


def check_checkpoint_tensors(
    spec: NetworkSpec, hp: Mapping[str, Any], tensors: Mapping[str, Any], *, member: str = "state_dict"
) -> list[tuple[str, tuple[int, ...], tuple[str, ...]]]:
    # ``tensors``: anything with ``.shape`` and ``.dtype`` per name (arrays, or the reader's TensorInfo)
    """Every expected tensor present, float32, with the derived shape; nothing else (strict like
    Lightning's ``load_state_dict(strict=True)``). Returns the checked rows (name, shape, sources)."""
    expected = expected_with_sources(spec, hp)
    rows = []
    for name, (shape, sources) in expected.items():
        if name not in tensors:
            raise SpecError(f"missing tensor {name!r} (expected shape {list(shape)}, decided by {', '.join(sources)})",
                            member=member)
        got = tuple(int(d) for d in tensors[name].shape)
        if len(got) != len(shape):
            raise SpecError(f"tensor {name!r} has {len(got)} axes {list(got)}, expected {list(shape)}", member=member)
        for axis, (a, b, src) in enumerate(zip(got, shape, sources)):
            if a != b:
                raise SpecError(
                    f"tensor {name!r} axis {axis} is {a} but the configs give {b} (decided by {src}); "
                    f"shape {list(got)} vs {list(shape)}", member=member)
        dt = str(tensors[name].dtype)
        if dt != "float32":
            raise SpecError(f"tensor {name!r} has dtype {dt}, expected float32", member=member)
        rows.append((name, shape, sources))
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise SpecError(f"unexpected tensor(s) {extra[:5]} not built by this torchapi-devel config "
                        "(upstream loads strictly)", member=member)
    return rows


_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*([.-]?(a|b|rc|post|dev)[0-9]*)*")


def lightning_version_warning(data: Mapping[str, Any]) -> list[str]:
    """Lightning's load_from_checkpoint (so Ptychodus) fails without a parseable version string."""
    version = data.get("pytorch-lightning_version")
    if isinstance(version, str) and _VERSION.fullmatch(version):
        return []
    return [f"'pytorch-lightning_version' is {_short(version)}: Lightning's load_from_checkpoint (so Ptychodus) "
            "fails on it (KeyError / InvalidVersion); the weights are still readable"]
