"""Convert an archive between the TensorFlow and PyTorch backends, or refuse with the exact reason.

Why: upstream's two implementations of the PtychoPINN CNN agree only on part of their configuration
space (``../shared/docs/upstream-architecture.md`` §3.2). A conversion is *read → neutral → check that the
target builds exactly the same network → write*; where it does not, we refuse and say which field
breaks the equivalence, instead of writing an archive whose outputs silently differ. Choices made on
the way (CBAM off, the ``c_outer`` override, zero-filled unused tensors) are recorded in the
manifest's ``conversion`` block.

The equivalence matrix is data, shared with the engines and writers
(:mod:`ptycho_bridge.spec.expressible`, targets ``"pytorch"`` and ``"tensorflow"``). :func:`plan_conversion` applies it and derives the target spec;
:func:`write_conversion` re-keys the canonical tensors for that spec and writes a bridge-2 archive
with the target backend's legacy members.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.configs import c_outer_override, torch_config_for
from converters.pytorch.layout import FORWARD_MODEL_AUX
from converters.pytorch.write import torch_legacy_members
from converters.tensorflow.layout import TF_DEFAULT_JITTER, TF_DEFAULT_OFFSET
from converters.tensorflow.write import tf_legacy_members
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.atomic import refuse_existing, resolve_output
from ptycho_bridge.model import BridgeArchive, ModelEntry
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.history import today_form
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX
from ptycho_bridge.spec.network import (
    NetworkSpec,
    expected_tensors,
    tf_padded_size,
    tf_spec,
    torch_spec,
)

BACKENDS = ("tensorflow", "pytorch")
PRIMARY = "diffraction_to_obj"


@dataclass
class Plan:
    """What a conversion will write: the target spec, and every choice made to get there."""

    target_spec: NetworkSpec
    choices: list[str]
    warnings: list[str]
    from_backend: str = ""
    to_backend: str = ""
    intensity_scale: float = 1.0
    zero_filled: tuple[str, ...] = ()  # target tensors the source lacks because its network never uses them
    dropped: tuple[str, ...] = ()  # source tensors the target has no place for (unused or training-only)
    torch_config: dict[str, Any] | None = None  # the torch configs written with a pytorch target
    legacy_params: dict[str, Any] = field(default_factory=dict)  # params for the target's legacy members

    @property
    def conversion(self) -> dict[str, Any]:
        """The manifest ``conversion`` block."""
        return {"from_backend": self.from_backend, "to_backend": self.to_backend, "choices": list(self.choices)}


def check_refusals(spec: NetworkSpec, to: str) -> None:
    """Raise :class:`ConversionRefused` for the first reason backend ``to`` cannot express ``spec``."""
    require(spec, to)


def _unused_outer(spec: NetworkSpec) -> set[str]:
    """Outer-branch tensors a padded-head network holds but never calls (probe_big=False)."""
    if spec.pad_object and not spec.probe_big and spec.outer_tensors:
        return {n for n in expected_tensors(spec) if ".outer." in n or n.split(".")[1:2] == ["conv2"]}
    return set()


def _primary(arch: BridgeArchive) -> ModelEntry:
    if PRIMARY not in arch.models:
        raise ConversionRefused(f"the archive has no {PRIMARY} model to convert", field="models")
    entry = arch.models[PRIMARY]
    if entry.spec is None:
        raise ConversionRefused(f"{PRIMARY} holds no weights (sentinel placeholder)", field="models")
    return entry


def _source_extras(arch: BridgeArchive) -> list[str]:
    others = [name for name in arch.models if name != PRIMARY]
    if not others:
        return []
    return [f"models {others} not converted: {PRIMARY} carries every inference weight"]


def _plan_tf_to_torch(arch: BridgeArchive, entry: ModelEntry) -> Plan:

    src = entry.spec
    assert src is not None
    check_refusals(src, "pytorch")
    target = torch_spec(
        N=src.N, gridsize=src.gridsize, n_filters_scale=src.n_filters_scale, object_big=src.object_big,
        probe_big=src.probe_big, amp_activation=src.amp_activation, c_outer=src.c_outer,
        padded_size=src.padded_size, amp_channels=src.amp_channels,
    )
    target.check()
    choices = ["cbam_encoder=False, cbam_bottleneck=False, batch_norm=False: TF has no attention or batch norm "
               "(upstream torch's default has CBAM on)"]
    legacy_target, _, widened = today_form(target, {})
    choices += [f"{note}; the torch bundle members (upstream main's loader) hold that form, the canonical tensors "
                "keep the source's one-channel head" for note in widened]
    override = c_outer_override(target)
    if override["use_legacy_decoder_channel_override"]:
        choices.append(
            f"c_outer={target.c_outer} as in TF: use_legacy_decoder_channel_override=True, "
            f"decoder_last_c_outer_fraction={override['decoder_last_c_outer_fraction']:.6g}, "
            f"decoder_last_amp_channels={override['decoder_last_amp_channels']}"
        )
    else:
        choices.append(f"c_outer={target.c_outer} as in TF: torch's default (the head channel count) is equal")
    names = set(entry.tensor_info)
    zero = tuple(n for n in expected_tensors(target) if n not in names)
    unused = _unused_outer(target)
    if set(zero) - unused:
        raise SpecError(f"source lacks tensors the torch network uses: {sorted(set(zero) - unused)}", member=PRIMARY)
    if zero:
        choices.append(f"probe_big=False: torch's unused outer branch ({len(zero)} tensors) filled with zeros")
    if src.amp_activation == "swish":
        choices.append("amp_activation 'swish' written as torch's 'silu' (the same function)")
    base = arch.torch_config if isinstance(arch.torch_config, Mapping) and "model_config" in arch.torch_config else None
    config = torch_config_for(legacy_target, arch.params, base)
    mc = config["model_config"]
    if mc.get("mode", "Unsupervised") == "Unsupervised":
        choices.append(f"training-only {', '.join(FORWARD_MODEL_AUX)} filled with ones "
                       f"[num_datasets={mc.get('num_datasets', 1)}] (forward_predict never reads them)")
    if mc.get("intensity_scale_trainable"):
        choices.append("intensity_scale_trainable=True kept from the source's torch config (forward_predict multiplies "
                       "by exp(log_scale)); params.dill intensity_scale.trainable agrees")
    else:
        choices.append("intensity_scale_trainable=False: forward_predict scales its input by input_scale_factor; "
                       "params.dill intensity_scale.trainable agrees")
    warnings = list(_source_extras(arch))
    scale = arch.intensity_scale
    if scale is None:
        scale = 1.0
        choices.append("no intensity_scale in the source: 1.0 written")
    return Plan(target, choices, warnings, from_backend="tensorflow", to_backend="pytorch",
                intensity_scale=float(scale), zero_filled=zero,
                dropped=tuple(n for n in entry.tensor_info if n not in expected_tensors(target)),
                torch_config=config, legacy_params=dict(arch.params))


def _plan_torch_to_tf(arch: BridgeArchive, entry: ModelEntry) -> Plan:
    src = entry.spec
    assert src is not None
    check_refusals(src, "tensorflow")
    params = dict(arch.params)
    mc = (arch.torch_config or {}).get("model_config") or {}
    choices: list[str] = []
    legacy = dict(params)
    padded = src.padded_size
    if padded is None:
        offset = params.get("offset", TF_DEFAULT_OFFSET)
        jitter = params.get("max_position_jitter", mc.get("max_position_jitter", TF_DEFAULT_JITTER))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, jitter)):
            raise ConversionRefused(f"offset={offset!r} / max_position_jitter={jitter!r} must be integers to size "
                                    "TF's reassembly canvas", field="offset", value=offset)
        padded = tf_padded_size(src.N, src.gridsize, offset, jitter)
        legacy.setdefault("offset", offset)
        legacy.setdefault("max_position_jitter", jitter)
        choices.append(f"padded_size={padded} = N + (gridsize-1)·offset + max_position_jitter with offset={offset}, "
                       f"max_position_jitter={jitter} (TF's reassembly canvas; torch has none)")
    target = tf_spec(
        N=src.N, gridsize=src.gridsize, n_filters_scale=src.n_filters_scale, object_big=src.object_big,
        probe_big=src.probe_big, pad_object=True, amp_activation=src.amp_activation, padded_size=padded,
        amp_channels=src.amp_channels,
    )
    target.check()
    choices += [f"{note}; the TF members (today's upstream loader) hold that form, the canonical tensors keep the "
                "source's one-channel head" for note in today_form(target, {})[2]]
    expected = expected_tensors(target)
    dropped = tuple(n for n in entry.tensor_info if n not in expected)
    unused = _unused_outer(src)
    aux = [n for n in dropped if n.startswith(TORCH_AUX_PREFIX)]
    other = set(dropped) - unused - set(aux)
    if other:
        raise ConversionRefused(f"tensors with no TF equivalent: {sorted(other)}", field="tensors")
    if set(dropped) & unused:
        choices.append(f"probe_big=False: torch's unused outer branch ({len(set(dropped) & unused)} tensors) dropped "
                       "(TF builds no outer branch)")
    if aux:
        choices.append(f"training-only tensors dropped: {', '.join(sorted(aux))}")
    missing = [n for n in expected if n not in entry.tensor_info]
    if missing:
        raise SpecError(f"source lacks tensors the TF network uses: {missing}", member=PRIMARY)
    warnings = list(_source_extras(arch))
    if mc.get("intensity_scale_trainable"):
        warnings.append("the torch model_config has intensity_scale_trainable=True: its forward_predict scaled "
                        "inputs by exp(log_scale); TF divides by exp(ln intensity_scale) instead")
    scale = arch.intensity_scale
    if scale is None:
        scale = 1.0
        choices.append("no intensity_scale in the source: 1.0 written (TF divides its input by exp(ln s) and "
                       "callers multiply by the same s, so the network input is unchanged)")
    legacy["intensity_scale"] = float(scale)
    legacy["backend"] = "tensorflow"
    if not isinstance(legacy.get("probe"), np.ndarray):
        # upstream's TF factory builds the autoencoder (and its ProbeIllumination, initialised from
        # params.cfg['probe']) beside diffraction_to_obj, so its loader needs a probe to exist
        legacy["probe"] = np.ones((target.N, target.N, 1), dtype=np.complex64)
        choices.append("no probe in the source (torch takes it as an input): params.dill gets a placeholder probe "
                       "ones((N, N, 1)) complex64 so upstream's TF model factory can build; diffraction_to_obj never "
                       "uses the probe, and params.json keeps the source parameters unchanged")
    for key, value in (("N", target.N), ("gridsize", target.gridsize), ("n_filters_scale", target.n_filters_scale),
                       ("object.big", target.object_big), ("probe.big", target.probe_big), ("pad_object", True),
                       ("amp_activation", target.amp_activation)):
        if key in legacy and legacy[key] != value:
            choices.append(f"params.dill {key}={legacy[key]!r} written as TF's {value!r} (the same network)")
        legacy[key] = value
    return Plan(target, choices, warnings, from_backend="pytorch", to_backend="tensorflow",
                intensity_scale=float(scale), dropped=dropped, legacy_params=legacy)


def plan_conversion(arch: BridgeArchive, to: str) -> Plan:
    """The target spec and recorded choices for converting ``arch`` to backend ``to``, or refuse."""
    if to not in BACKENDS:
        raise ConversionRefused(f"unknown target backend {to!r} (expected one of {list(BACKENDS)})", field="to", value=to)
    if arch.backend not in BACKENDS:
        raise ConversionRefused(f"source backend {arch.backend!r} is neither of {list(BACKENDS)}", field="backend",
                                value=arch.backend)
    if arch.backend == to:
        raise ConversionRefused(f"the archive is already a {to} archive; use `ptycho-bridge migrate` to rewrite it "
                                "as bridge-2", field="backend", value=arch.backend)
    entry = _primary(arch)
    plan = _plan_tf_to_torch(arch, entry) if to == "pytorch" else _plan_torch_to_tf(arch, entry)
    plan.warnings.extend(w for w in arch.warnings if w not in plan.warnings)
    return plan


def target_tensors(entry: ModelEntry, plan: Plan) -> dict[str, np.ndarray]:
    """Canonical tensors for the target spec: shared ones bit-identical, unused ones zero, aux ones one."""
    expected = expected_tensors(plan.target_spec)
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name in plan.zero_filled:
            out[name] = np.zeros(shape, dtype=np.float32)
            continue
        value = np.asarray(entry.tensors[name])
        if tuple(value.shape) != shape:
            raise SpecError(f"tensor {name!r} has shape {list(value.shape)}, the target spec needs {list(shape)}",
                            member=PRIMARY)
        out[name] = value
    if plan.to_backend == "pytorch":

        mc = (plan.torch_config or {}).get("model_config", {})
        for name in entry.tensor_info:
            if name.startswith(TORCH_AUX_PREFIX):
                out[name] = np.asarray(entry.tensors[name])
        if mc.get("mode", "Unsupervised") == "Unsupervised":
            n = int(mc.get("num_datasets", 1))
            for aux in FORWARD_MODEL_AUX:
                out.setdefault(TORCH_AUX_PREFIX + aux, np.ones((n,), dtype=np.float32))
    return out


def write_conversion(arch: BridgeArchive, plan: Plan, out_path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write the converted bridge-2 archive (atomically) with the target backend's legacy members."""

    entry = _primary(arch)
    tensors = target_tensors(entry, plan)
    spec = plan.target_spec
    # upstream's loaders rebuild today's network and load weights by shape: its members get today's form
    legacy_spec, legacy_tensors, _ = today_form(spec, tensors)
    if plan.to_backend == "pytorch":

        legacy = torch_legacy_members(legacy_spec, legacy_tensors, plan.legacy_params, torch_config=plan.torch_config,
                                      intensity_scale=plan.intensity_scale)
        payload = ("torch-state-dict", f"{PRIMARY}/model.pth")
        torch_config = plan.torch_config
    else:

        legacy = tf_legacy_members(legacy_spec, legacy_tensors, plan.legacy_params, plan.intensity_scale)
        payload = ("keras", f"{PRIMARY}/model.keras")
        torch_config = arch.torch_config
    model = ModelToWrite(spec, tensors, payload_kind=payload[0], payload_member=payload[1],
                         reassembly_centring=entry.reassembly_centring)
    return write_archive(
        out_path, force=force, backend=plan.to_backend, source_era=arch.era, models={PRIMARY: model},
        params=arch.params, intensity_scale=plan.intensity_scale, torch_config=torch_config,
        legacy_members=legacy, conversion=plan.conversion,
    )


def convert_archive(src_path: str | os.PathLike[str], to: str, out_path: str | os.PathLike[str], *,
                    force: bool = False) -> Path:
    """Read ``src_path``, plan the conversion to ``to`` and write it to ``out_path`` (folder or ``.zip``).

    A refusal raises :class:`ConversionRefused` before anything is written.
    """

    target = resolve_output(out_path)
    refuse_existing(target, force=force)
    arch = read_archive(src_path)
    plan = plan_conversion(arch, to)
    return write_conversion(arch, plan, target, force=force)


__all__ = [
    "BACKENDS",
    "Plan",
    "check_refusals",
    "convert_archive",
    "plan_conversion",
    "target_tensors",
    "write_conversion",
]
