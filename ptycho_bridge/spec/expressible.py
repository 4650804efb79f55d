"""What each backend and each engine can express: ONE table of refusals, read by convert, engines and writers.

Why: "can target X build this network exactly?" used to be answered in six places with three error
types. Here every answer is a row — (field, when it breaks, why) — grouped by target, and one
function, :func:`refusals`, returns every row a spec breaks as ``Refusal(field, value, reason)``.
Callers that need an exception call :func:`require`, which raises :class:`ConversionRefused` for
the first row (rows are ordered so the most fundamental difference is named first).

Targets:

- ``"pytorch"`` / ``"tensorflow"``: the *function* of a network of the other backend can be carried
  to upstream's torch / TF factory (the conversion matrix of ``docs/user-guide.md``); representational
  choices (zero-filled unused branches, the c_outer override) are the converter's business.
- ``"pytorch-archive"`` / ``"tensorflow-archive"``: a spec is in the exact form that backend's
  factory emits, so its legacy members can be written (what the writers check).
- ``"ptychodus-ckpt"``: the network upstream torchapi-devel's ``PtychoPINN_Lightning`` builds (the
  Lightning ``.ckpt`` Ptychodus 1.7 loads; :mod:`converters.pytorch.ckpt` writes it).
- ``"engine:torch"``, ``"engine:keras"``, ``"engine:onnx"``: what each of our engines implements.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.spec.network import (
    ENGINE_AMP_ACTIVATIONS,
    FAMILY,
    SUPPORTED_N,
    TF_AMP_ACTIVATIONS,
    TF_C_OUTER,
    TORCH_AMP_ACTIVATIONS,
    NetworkSpec,
    tf_outer_width,
    tf_spec,
)


@dataclass(frozen=True)
class Refusal:
    """One reason a target cannot express a spec: the field, its value, and why."""

    field: str
    value: Any
    reason: str

    def error(self) -> ConversionRefused:
        return ConversionRefused(self.reason, field=self.field, value=self.value)


@dataclass(frozen=True)
class Rule:
    """A row of the table: when ``breaks(spec)``, ``reason`` (formatted with :func:`facts`) says why."""

    field: str
    breaks: Callable[[NetworkSpec], bool]
    reason: str


def facts(spec: NetworkSpec) -> dict[str, Any]:
    """Spec fields plus derived sizes, for the reason templates."""
    return {**spec.to_dict(), "amp_channels": spec.amp_channels, "outer_mask": spec.outer_mask,
            "amp_head_channels": spec.head_channels("amp"), "channels": spec.channels, "latent_width": spec.latent_width,
            "tf_outer_width": tf_outer_width(spec.N, spec.n_filters_scale), "torch_outer_width": spec.latent_width,
            "SUPPORTED": list(SUPPORTED_N), "TF_AMP_ACTIVATIONS": TF_AMP_ACTIVATIONS,
            "ENGINE_AMP_ACTIVATIONS": ENGINE_AMP_ACTIVATIONS}


_UNMASKED = ("outer_mask=False (upstream torchapi-devel, Ptychodus 1.7): the outer branch is added over the whole "
             "patch, {target} masks it to the border with 1 − M; the networks are not equivalent")
_AMP_CHANNELS = ("amp_channels={amp_channels}: the amp head emits {amp_channels} channel(s) broadcast over "
                 "{channels_out} phase channels (torchapi-devel's decoder_last_amp_channels); {target} emits the same "
                 "count from both heads")

# what to do instead when a CBAM network is asked to become TF (refusals name the alternative)
_CBAM_ALTERNATIVE = ("; it can never become a TF archive: run it with `ptycho-bridge run --engine onnx` (or torch), or deploy it with `ptycho-bridge export-onnx`")

RULES: dict[str, tuple[Rule, ...]] = {
    # a TF network's function carried to upstream torch
    "pytorch": (
        Rule("N", lambda s: s.N not in SUPPORTED_N,
             "N={N}: TF allows only {SUPPORTED}; torch would silently build a degenerate encoder"),
        Rule("use_polar", lambda s: not s.use_polar,
             "use_polar=False: the legacy TF combine amp + i·phase (upstream's .keras CombineComplexLayer before "
             "2026-01-26) has no torch equivalent (torch computes amp·exp(i·phase))"),
        Rule("pad_object", lambda s: not s.pad_object,
             "pad_object=False: TF builds a different head (no slicing, padding or mask) and torch ignores "
             "pad_object, always building the padded head; the networks are not equivalent"),
        Rule("amp_activation", lambda s: s.amp_activation not in TORCH_AMP_ACTIVATIONS,
             "amp_activation={amp_activation!r}: torch has only sigmoid and SiLU (= swish); no equivalent"),
        Rule("probe_big", lambda s: s.probe_big and s.outer_width != s.latent_width,
             "probe_big=True with N={N}: TF's outer up-block is n_filters_scale·2048/N = {outer_width} wide, torch's "
             "is 32·n_filters_scale = {latent_width}; the networks are not equivalent"),
        Rule("object_big", lambda s: not s.object_big and s.gridsize > 1,
             "object_big=False with gridsize={gridsize}: TF's encoder takes gridsize² = {channels} channels, torch's "
             "takes 1; the networks are not equivalent"),
        Rule("batch_norm", lambda s: s.batch_norm, "batch_norm=True: not a TF network"),
    ),
    # a torch network's function carried to upstream TF
    "tensorflow": (
        Rule("N", lambda s: s.N not in SUPPORTED_N, "N={N}: TF allows only {SUPPORTED}"),
        Rule("cbam_encoder", lambda s: s.cbam_encoder,
             "cbam_encoder=True: TF has no attention modules; the networks are not equivalent"
             + _CBAM_ALTERNATIVE),
        Rule("cbam_bottleneck", lambda s: s.cbam_bottleneck,
             "cbam_bottleneck=True: TF has no attention modules; the networks are not equivalent"
             + _CBAM_ALTERNATIVE),
        Rule("batch_norm", lambda s: s.batch_norm,
             "batch_norm=True: TF has no batch-norm layers; the networks are not equivalent"),
        Rule("use_polar", lambda s: not s.use_polar, "use_polar=False: not a torch network"),
        Rule("amp_activation", lambda s: s.amp_activation not in TORCH_AMP_ACTIVATIONS,
             "amp_activation={amp_activation!r}: upstream torch builds only sigmoid or SiLU"),
        Rule("outer_mask", lambda s: s.probe_big and not s.outer_mask, _UNMASKED.replace("{target}", "TF")),
        Rule("c_outer", lambda s: s.c_outer != TF_C_OUTER,
             "c_outer={c_outer}: TF routes exactly 4 latent channels to the outer branch (hard-coded), this torch "
             "network routes {c_outer}; the networks are not equivalent"),
        Rule("outer_width", lambda s: s.probe_big and s.outer_width != tf_outer_width(s.N, s.n_filters_scale),
             "probe_big=True with N={N}: torch's outer up-block is {outer_width} wide, TF's is "
             "n_filters_scale·2048/N = {tf_outer_width}; the networks are not equivalent"),
        Rule("object_big", lambda s: not s.object_big and s.gridsize > 1,
             "object_big=False with gridsize={gridsize}: torch's encoder takes 1 channel, TF's takes gridsize² = "
             "{channels}; the networks are not equivalent"),
    ),
    # the exact form upstream torch's factory emits (the torch legacy writer's precondition)
    "pytorch-archive": (
        Rule("pad_object", lambda s: not s.pad_object,
             "pad_object={pad_object!r} (torch needs True): torch ignores pad_object and always builds the padded head"),
        Rule("use_polar", lambda s: not s.use_polar,
             "use_polar={use_polar!r} (torch needs True): torch always combines amp·exp(iφ)"),
        Rule("batch_norm", lambda s: s.batch_norm,
             "batch_norm={batch_norm!r} (torch needs False): the canonical tensor index has no batch-norm decoder tensors"),
        Rule("outer_tensors", lambda s: not s.outer_tensors,
             "outer_tensors={outer_tensors!r} (torch needs True): torch always builds the outer branch"),
        Rule("narrow_head", lambda s: not s.narrow_head,
             "narrow_head={narrow_head!r} (torch needs True): torch always builds the narrow head conv"),
        Rule("outer_width", lambda s: s.outer_width != s.latent_width,
             "outer_width={outer_width!r} (torch needs {latent_width!r}): torch's outer up-block is 32·n_filters_scale wide"),
        Rule("channels_in", lambda s: s.channels_in != (s.channels if s.object_big else 1),
             "channels_in={channels_in!r} (torch needs {torch_channels_in!r}): torch's encoder takes gridsize² channels "
             "with object_big, else 1"),
        Rule("amp_activation", lambda s: s.amp_activation not in TORCH_AMP_ACTIVATIONS,
             "amp_activation={amp_activation!r}: torch has sigmoid, and SiLU (= swish) for any other name"),
        Rule("outer_mask", lambda s: s.probe_big and not s.outer_mask,
             _UNMASKED.replace("{target}", "upstream main's torch network")
             + "; export-ckpt writes it as the Lightning checkpoint Ptychodus loads"),
        Rule("amp_channels", lambda s: s.amp_channels is not None,
             _AMP_CHANNELS.replace("{target}", "the torch bundle writer (upstream main)")
             + "; spec.history.today_form gives the equivalent network with the amplitude head widened"),
    ),
    # upstream torchapi-devel's PtychoPINN_Lightning (the Lightning .ckpt Ptychodus 1.7 loads)
    "ptychodus-ckpt": (
        Rule("N", lambda s: s.N not in SUPPORTED_N, "N={N}: torchapi-devel builds only {SUPPORTED}"),
        Rule("pad_object", lambda s: not s.pad_object,
             "pad_object={pad_object!r}: torchapi-devel always builds the padded head (narrow conv, outer branch)"),
        Rule("use_polar", lambda s: not s.use_polar,
             "use_polar=False: this network combines amp + i·phase (upstream's .keras CombineComplexLayer before "
             "2026-01-26); torchapi-devel combines amp·exp(i·phase)"),
        Rule("outer_mask", lambda s: s.probe_big and s.outer_mask,
             "outer_mask=True with probe_big=True: this network multiplies its outer (probe_big) branch by the border "
             "mask 1 − M (TF / upstream-main torch); torchapi-devel adds it unmasked over the whole patch, and no "
             "choice of weights turns one into the other"),
        Rule("batch_norm", lambda s: s.batch_norm,
             "batch_norm=True: the canonical tensor index has no decoder/head batch-norm names to write"),
        Rule("outer_tensors", lambda s: not s.outer_tensors,
             "outer_tensors=False: torchapi-devel always builds the outer branch"),
        Rule("narrow_head", lambda s: not s.narrow_head, "narrow_head=False: torchapi-devel always builds conv1"),
        Rule("outer_width", lambda s: s.outer_width != s.latent_width,
             "outer_width={outer_width}: torchapi-devel's outer up-block is 32·n_filters_scale = {latent_width} wide"),
        Rule("channels_in", lambda s: s.channels_in != (s.channels if s.object_big else 1),
             "channels_in={channels_in}: torchapi-devel's encoder takes C_model channels with object_big, else 1"),
        Rule("amp_activation", lambda s: s.amp_activation not in TORCH_AMP_ACTIVATIONS,
             "amp_activation={amp_activation!r}: torchapi-devel has sigmoid, and SiLU (= swish) for any other name"),
        Rule("c_outer", lambda s: not 1 <= s.c_outer <= s.latent_width // 2,
             "c_outer={c_outer}: torchapi-devel routes max(1, int(32·nfs·f)) channels with f clamped to [0, 0.5], "
             "i.e. 1..{latent_width_half}"),
    ),
    # the exact form upstream TF's factory emits (the TF legacy writer's precondition); see _tf_form_refusals
    "tensorflow-archive": (
        Rule("family", lambda s: s.family != FAMILY, "network family {family!r} is not the PtychoPINN CNN"),
    ),
    "engine:torch": (
        Rule("batch_norm", lambda s: s.batch_norm,
             "batch_norm=True is not supported by the torch engine (the canonical tensor index does "
             "not enumerate upstream's decoder/head batch-norm tensors)"),
        Rule("amp_activation", lambda s: s.amp_activation not in ENGINE_AMP_ACTIVATIONS,
             "amp_activation={amp_activation!r} is not one of {ENGINE_AMP_ACTIVATIONS_LIST}"),
    ),
    "engine:keras": (
        Rule("cbam", lambda s: s.cbam_encoder or s.cbam_bottleneck,
             "the TF network has no CBAM attention (cbam_encoder/cbam_bottleneck); use --engine onnx or torch"),
        Rule("batch_norm", lambda s: s.batch_norm, "the TF network has no batch normalisation"),
        Rule("outer_mask", lambda s: s.probe_big and not s.outer_mask, _UNMASKED.replace("{target}", "the TF network")),
        Rule("amp_activation", lambda s: s.amp_activation not in ENGINE_AMP_ACTIVATIONS,
             "amp_activation {amp_activation!r} is not one of {ENGINE_AMP_ACTIVATIONS}"),
    ),
    "engine:onnx": (
        Rule("amp_activation", lambda s: s.amp_activation not in ENGINE_AMP_ACTIVATIONS,
             "amp_activation={amp_activation!r} is not supported (expected one of {ENGINE_AMP_ACTIVATIONS})"),
    ),
}
TARGETS = tuple(RULES)


def _tf_form_refusals(spec: NetworkSpec) -> list[Refusal]:
    """TF's factory is a function of seven fields: the spec must equal ``tf_spec`` of its own fields."""
    try:
        want = tf_spec(N=spec.N, gridsize=spec.gridsize, n_filters_scale=spec.n_filters_scale, object_big=spec.object_big,
                       probe_big=spec.probe_big, pad_object=spec.pad_object, amp_activation=spec.amp_activation,
                       use_polar=spec.use_polar, padded_size=spec.padded_size, amp_channels=spec.amp_channels)
        want.check()
    except SpecError as exc:
        return [Refusal(exc.field or "network", None, f"upstream TF cannot build this network: {exc.reason}")]
    out = []
    if spec.amp_activation not in TF_AMP_ACTIVATIONS:
        out.append(Refusal("amp_activation", spec.amp_activation,
                           f"amp_activation {spec.amp_activation!r} is not one upstream TF builds {TF_AMP_ACTIVATIONS}"))
    for f in fields(NetworkSpec):
        have, expect = getattr(spec, f.name), getattr(want, f.name)
        if have != expect:
            out.append(Refusal(f.name, have, f"upstream TF fixes {f.name}={expect!r} for this configuration but the "
                                              f"network has {have!r}"))
    return out


def refusals(spec: NetworkSpec, target: str) -> list[Refusal]:
    """Every reason ``target`` cannot express ``spec`` (empty: it can), most fundamental first."""
    if target not in RULES:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    values = facts(spec)
    values["torch_channels_in"] = spec.channels if spec.object_big else 1
    values["ENGINE_AMP_ACTIVATIONS_LIST"] = list(ENGINE_AMP_ACTIVATIONS)
    values["latent_width_half"] = spec.latent_width // 2
    out = [Refusal(rule.field, getattr(spec, rule.field, None), rule.reason.format(**values))
           for rule in RULES[target] if rule.breaks(spec)]
    if target == "tensorflow-archive" and not out:
        out = _tf_form_refusals(spec)
    return out


def require(spec: NetworkSpec, target: str, *, error: Callable[[Refusal], Exception] = Refusal.error) -> None:
    """Raise (``error(first refusal)``, a :class:`ConversionRefused` by default) unless ``target`` can express ``spec``."""
    found = refusals(spec, target)
    if found:
        raise error(found[0])
