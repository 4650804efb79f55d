"""Convert an archive between the TensorFlow and PyTorch backends, or refuse with the exact reason.

Why: upstream's two implementations of the PtychoPINN CNN agree only on part of their configuration
space (``docs/upstream-architecture.md`` §3.2). A conversion is *read → neutral → check that the
target builds exactly the same network → write*; where it does not, we refuse and say which field
breaks the equivalence, instead of writing an archive whose outputs silently differ. Choices made on
the way (CBAM off, the ``c_outer`` override, zero-filled unused tensors) are recorded in the
manifest's ``conversion`` block.

The equivalence matrix is data (:data:`REFUSALS`): one row per condition, per direction, with the
reason it breaks equivalence. :func:`plan_conversion` applies it and derives the target spec;
:func:`write_conversion` re-keys the canonical tensors for that spec and writes a bridge-2 archive
with the target backend's legacy members.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ptycho_bridge.io.atomic import refuse_existing, resolve_output
from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX
from ptycho_bridge.model import BridgeArchive, ModelEntry
from ptycho_bridge.spec.network import (
    SUPPORTED_N,
    TF_C_OUTER,
    NetworkSpec,
    expected_tensors,
    tf_outer_width,
    tf_padded_size,
    tf_spec,
    torch_spec,
)

BACKENDS = ("tensorflow", "pytorch")
PRIMARY = "diffraction_to_obj"
# params.cfg defaults upstream's TF loader falls back on when params.dill lacks a key (DEFAULT_CFG).
TF_DEFAULT_OFFSET = 4
TF_DEFAULT_JITTER = 10


def _facts(spec: NetworkSpec) -> dict[str, Any]:
    """Spec fields plus derived sizes, for the reason templates."""
    return {**spec.to_dict(), "channels": spec.channels, "latent_width": spec.latent_width,
            "tf_outer_width": tf_outer_width(spec.N, spec.n_filters_scale), "torch_outer_width": spec.latent_width}


@dataclass(frozen=True)
class Refusal:
    """One row of the equivalence matrix: when ``breaks(spec)``, the target cannot express the source."""

    direction: str  # "tensorflow->pytorch" or "pytorch->tensorflow"
    field: str
    breaks: Callable[[NetworkSpec], bool]
    reason: str  # formatted with :func:`_facts`

    def message(self, spec: NetworkSpec) -> str:
        return self.reason.format(**_facts(spec), SUPPORTED=list(SUPPORTED_N))


TF_TO_TORCH = "tensorflow->pytorch"
TORCH_TO_TF = "pytorch->tensorflow"

REFUSALS: tuple[Refusal, ...] = (
    # TF source → torch target
    Refusal(TF_TO_TORCH, "N", lambda s: s.N not in SUPPORTED_N,
            "N={N}: TF allows only {SUPPORTED}; torch would silently build a degenerate encoder"),
    Refusal(TF_TO_TORCH, "use_polar", lambda s: not s.use_polar,
            "use_polar=False: the legacy TF combine A + iφ has no torch equivalent (torch computes amp·exp(iφ))"),
    Refusal(TF_TO_TORCH, "pad_object", lambda s: not s.pad_object,
            "pad_object=False: TF builds a different head (no slicing, padding or mask) and torch ignores "
            "pad_object, always building the padded head; the networks are not equivalent"),
    Refusal(TF_TO_TORCH, "amp_activation", lambda s: s.amp_activation not in ("sigmoid", "swish"),
            "amp_activation={amp_activation!r}: torch has only sigmoid and SiLU (= swish); no equivalent"),
    Refusal(TF_TO_TORCH, "probe_big", lambda s: s.probe_big and s.outer_width != s.latent_width,
            "probe_big=True with N={N}: TF's outer up-block is n_filters_scale·2048/N = {outer_width} wide, torch's "
            "is 32·n_filters_scale = {latent_width}; the networks are not equivalent"),
    Refusal(TF_TO_TORCH, "object_big", lambda s: not s.object_big and s.gridsize > 1,
            "object_big=False with gridsize={gridsize}: TF's encoder takes gridsize² = {channels} channels, torch's "
            "takes 1; the networks are not equivalent"),
    Refusal(TF_TO_TORCH, "batch_norm", lambda s: s.batch_norm, "batch_norm=True: not a TF network"),
    # torch source → TF target
    Refusal(TORCH_TO_TF, "N", lambda s: s.N not in SUPPORTED_N, "N={N}: TF allows only {SUPPORTED}"),
    Refusal(TORCH_TO_TF, "cbam_encoder", lambda s: s.cbam_encoder,
            "cbam_encoder=True: TF has no attention modules; the networks are not equivalent"),
    Refusal(TORCH_TO_TF, "cbam_bottleneck", lambda s: s.cbam_bottleneck,
            "cbam_bottleneck=True: TF has no attention modules; the networks are not equivalent"),
    Refusal(TORCH_TO_TF, "batch_norm", lambda s: s.batch_norm,
            "batch_norm=True: TF has no batch-norm layers; the networks are not equivalent"),
    Refusal(TORCH_TO_TF, "use_polar", lambda s: not s.use_polar, "use_polar=False: not a torch network"),
    Refusal(TORCH_TO_TF, "amp_activation", lambda s: s.amp_activation not in ("sigmoid", "swish"),
            "amp_activation={amp_activation!r}: upstream torch builds only sigmoid or SiLU"),
    Refusal(TORCH_TO_TF, "c_outer", lambda s: s.c_outer != TF_C_OUTER,
            "c_outer={c_outer}: TF routes exactly 4 latent channels to the outer branch (hard-coded), this torch "
            "network routes {c_outer}; the networks are not equivalent"),
    Refusal(TORCH_TO_TF, "outer_width", lambda s: s.probe_big and s.outer_width != tf_outer_width(s.N, s.n_filters_scale),
            "probe_big=True with N={N}: torch's outer up-block is {outer_width} wide, TF's is "
            "n_filters_scale·2048/N = {tf_outer_width}; the networks are not equivalent"),
    Refusal(TORCH_TO_TF, "object_big", lambda s: not s.object_big and s.gridsize > 1,
            "object_big=False with gridsize={gridsize}: torch's encoder takes 1 channel, TF's takes gridsize² = "
            "{channels}; the networks are not equivalent"),
)


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


def check_refusals(spec: NetworkSpec, direction: str) -> None:
    """Raise :class:`ConversionRefused` for the first matrix row ``spec`` breaks in ``direction``."""
    for row in REFUSALS:
        if row.direction == direction and row.breaks(spec):
            raise ConversionRefused(row.message(spec), field=row.field, value=getattr(spec, row.field, None))


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
    from converters.pytorch.write import FORWARD_MODEL_AUX, c_outer_override, torch_config_for

    src = entry.spec
    assert src is not None
    check_refusals(src, TF_TO_TORCH)
    target = torch_spec(
        N=src.N, gridsize=src.gridsize, n_filters_scale=src.n_filters_scale, object_big=src.object_big,
        probe_big=src.probe_big, amp_activation=src.amp_activation, c_outer=src.c_outer,
        padded_size=src.padded_size,
    )
    target.check()
    choices = ["cbam_encoder=False, cbam_bottleneck=False, batch_norm=False: TF has no attention or batch norm "
               "(upstream torch's default has CBAM on)"]
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
    config = torch_config_for(target, arch.params, base)
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
    check_refusals(src, TORCH_TO_TF)
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
    )
    target.check()
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
        from converters.pytorch.write import FORWARD_MODEL_AUX

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
    from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive

    entry = _primary(arch)
    tensors = target_tensors(entry, plan)
    spec = plan.target_spec
    if plan.to_backend == "pytorch":
        from converters.pytorch.write import torch_legacy_members

        legacy = torch_legacy_members(spec, tensors, plan.legacy_params, torch_config=plan.torch_config,
                                      intensity_scale=plan.intensity_scale)
        payload = ("torch-state-dict", f"{PRIMARY}/model.pth")
        torch_config = plan.torch_config
    else:
        from converters.tensorflow.write import tf_legacy_members

        legacy = tf_legacy_members(spec, tensors, plan.legacy_params, plan.intensity_scale)
        payload = ("keras", f"{PRIMARY}/model.keras")
        torch_config = arch.torch_config
    model = ModelToWrite(spec, tensors, payload_kind=payload[0], payload_member=payload[1])
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
    from ptycho_bridge.formats.detect import read_archive

    target = resolve_output(out_path)
    refuse_existing(target, force=force)
    arch = read_archive(src_path)
    plan = plan_conversion(arch, to)
    return write_conversion(arch, plan, target, force=force)


__all__ = [
    "BACKENDS",
    "REFUSALS",
    "Plan",
    "Refusal",
    "check_refusals",
    "convert_archive",
    "plan_conversion",
    "target_tensors",
    "write_conversion",
]
