"""The neutral network description (:class:`NetworkSpec`) and the canonical tensor index it implies.

Why: both upstream backends build "the PtychoPINN CNN" from a handful of parameters, but they read
them from different places and disagree on a few details (c_outer, outer-branch width, CBAM). The
spec records every field that decides the graph, so one function (:func:`expected_tensors`) can say
which canonical tensors must exist and with which shapes, and every reader and writer checks
against it instead of guessing. Layout of every canonical conv weight: OIHW (ONNX's and torch's).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ptycho_bridge.errors import SpecError

FAMILY = "ptychopinn-cnn"
SUPPORTED_N = (64, 128, 256)
# Amplitude activations, defined once: what upstream TF builds, what upstream torch builds (anything but
# "sigmoid" is SiLU there, i.e. TF's "swish"), and what our engines implement ("silu" = "swish").
TF_AMP_ACTIVATIONS = ("sigmoid", "swish", "softplus", "relu")
TORCH_AMP_ACTIVATIONS = ("sigmoid", "swish")
ENGINE_AMP_ACTIVATIONS = ("sigmoid", "swish", "silu", "softplus", "relu")
# the function each engine name computes (engines map these kinds to their framework's ops)
AMP_ACTIVATION_KIND = {"sigmoid": "sigmoid", "swish": "swish", "silu": "swish", "softplus": "softplus", "relu": "relu"}


def torch_amp_activation(name: str) -> tuple[str, list[str]]:
    """Upstream torch: 'sigmoid' → sigmoid, any other string → SiLU (= TF 'swish')."""
    if name == "sigmoid":
        return "sigmoid", []
    notes = []
    if name not in ("silu", "swish"):
        notes.append(f"torch amp_activation {name!r} means SiLU upstream (anything but 'sigmoid' is SiLU)")
    return "swish", notes
HEADS = ("amp", "phase")
CBAM_REDUCTION = 16
CBAM_SPATIAL_KERNEL = 7
TF_C_OUTER = 4
# Fields :meth:`NetworkSpec.to_dict` omits at these values (added after manifests were first written).
OPTIONAL_DEFAULTS: dict[str, Any] = {"amp_channels": None, "outer_mask": True}


@dataclass(frozen=True)
class NetworkSpec:
    """Every field that decides the ``diffraction_to_obj`` graph (and nothing that does not).

    ``channels_in`` is what the first conv sees; ``channels_out`` what each head emits.
    ``c_outer`` is the number of latent channels routed to the outer (border) branch;
    ``outer_width`` the width of that branch's up-block. ``outer_tensors`` says whether the
    outer-branch weights exist at all (torch always builds them; TF only when they are used).
    ``narrow_head`` says whether the narrow head conv (``conv1``) exists (TF: only with pad_object).
    ``amp_channels`` is the amp head's output width when it differs from ``channels_out`` (upstream
    torchapi-devel's ``decoder_last_amp_channels``: 1, broadcast over the phase channels); None means
    ``channels_out``. ``outer_mask`` says whether the outer branch is multiplied by the border mask
    ``1 − M`` before the sum (TF and upstream-main torch: yes; upstream torchapi-devel, which Ptychodus
    1.7 loads: no). :meth:`to_dict` leaves both out at their defaults, so every manifest written before
    they existed serialises byte-identically.
    """

    N: int
    gridsize: int
    n_filters_scale: int
    object_big: bool
    probe_big: bool
    pad_object: bool
    amp_activation: str
    channels_in: int
    channels_out: int
    c_outer: int
    outer_width: int
    outer_tensors: bool = True
    narrow_head: bool = True
    cbam_encoder: bool = False
    cbam_bottleneck: bool = False
    batch_norm: bool = False
    use_polar: bool = True
    padded_size: int | None = None
    family: str = FAMILY
    amp_channels: int | None = None
    outer_mask: bool = True

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Patches per group, ``gridsize**2``."""
        return self.gridsize * self.gridsize

    @property
    def n_encoder_blocks(self) -> int:
        return int(round(math.log2(self.N))) - 3

    @property
    def n_decoder_blocks(self) -> int:
        return self.n_encoder_blocks - 1

    @property
    def encoder_widths(self) -> list[int]:
        base = self.n_filters_scale * (2048 // self.N)
        return [base * 2**i for i in range(self.n_encoder_blocks)]

    @property
    def decoder_widths(self) -> list[int]:
        d = self.n_decoder_blocks
        return [self.n_filters_scale * 32 * 2 ** (d - 1 - i) for i in range(d)]

    @property
    def latent_width(self) -> int:
        """Channels entering the heads (``32·nfs``)."""
        return 32 * self.n_filters_scale

    def head_channels(self, head: str) -> int:
        """Output channels of head ``'amp'`` or ``'phase'`` (they differ only with ``amp_channels``)."""
        if head == "amp" and self.amp_channels is not None:
            return self.amp_channels
        return self.channels_out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name, default in OPTIONAL_DEFAULTS.items():
            if d[name] == default and type(d[name]) is type(default):
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetworkSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown network spec field(s) {unknown}", field="network")
        return cls(**{k: data[k] for k in data if k in known})

    def check(self) -> None:
        """Internal consistency; raises :class:`SpecError` naming the field."""
        if self.N not in SUPPORTED_N:
            raise SpecError(f"N={self.N} is not supported (expected one of {SUPPORTED_N})", field="N")
        if self.gridsize < 1:
            raise SpecError(f"gridsize={self.gridsize} must be >= 1", field="gridsize")
        if self.n_filters_scale < 1:
            raise SpecError(f"n_filters_scale={self.n_filters_scale} must be >= 1", field="n_filters_scale")
        if not 1 <= self.c_outer < self.latent_width:
            raise SpecError(
                f"c_outer={self.c_outer} must be in [1, {self.latent_width})", field="c_outer"
            )
        expect_out = self.channels if self.object_big else 1
        if self.channels_out != expect_out:
            raise SpecError(
                f"channels_out={self.channels_out} but object_big={self.object_big} with gridsize "
                f"{self.gridsize} means {expect_out}",
                field="channels_out",
            )
        if self.amp_channels is not None and (
            type(self.amp_channels) is not int or self.amp_channels not in (1, self.channels_out)
        ):
            raise SpecError(
                f"amp_channels={self.amp_channels!r} must be 1 (broadcast over the phase channels) or "
                f"channels_out={self.channels_out}",
                field="amp_channels",
            )
        if not isinstance(self.outer_mask, bool) or (not self.outer_mask and not self.pad_object):
            raise SpecError(f"outer_mask={self.outer_mask!r} must be a bool, and False only with pad_object",
                            field="outer_mask")
        if self.pad_object and not self.narrow_head:
            raise SpecError("pad_object=True requires the narrow head conv (narrow_head=True)", field="narrow_head")
        if (self.probe_big or not self.pad_object) and not self.outer_tensors:
            raise SpecError(
                "the outer branch is used (probe_big or not pad_object) but outer_tensors=False",
                field="outer_tensors",
            )


def tf_outer_width(N: int, n_filters_scale: int) -> int:
    """TF's outer up-block width ``nfs·2048/N`` (torch's is always ``32·nfs``)."""
    return n_filters_scale * (2048 // N)


def torch_legacy_c_outer(n_filters_scale: int, fraction: float) -> int:
    """Torch's ``c_outer`` under ``use_legacy_decoder_channel_override``: ``max(1, int(32·nfs·clamp(f, 0, 0.5)))``."""
    return max(1, int(32 * n_filters_scale * min(max(fraction, 0.0), 0.5)))


def tf_spec(
    *,
    N: int,
    gridsize: int,
    n_filters_scale: int,
    object_big: bool,
    probe_big: bool,
    pad_object: bool,
    amp_activation: str,
    use_polar: bool = True,
    padded_size: int | None = None,
    amp_channels: int | None = None,
) -> NetworkSpec:
    """The spec of the network upstream's TF factory builds for these parameters.

    ``amp_channels=1`` is the factory of upstream before c03673d (2026-02-10): the amplitude heads were
    ``Conv2D(1)`` at every gridsize (``ptycho_bridge.spec.history``); today's factory gives them ``Cout``.
    """
    channels = gridsize * gridsize
    outer_used = (pad_object and probe_big) or not pad_object
    cout = channels if object_big else 1
    return NetworkSpec(
        N=N,
        gridsize=gridsize,
        n_filters_scale=n_filters_scale,
        object_big=object_big,
        probe_big=probe_big,
        pad_object=pad_object,
        amp_activation=amp_activation,
        channels_in=channels,
        channels_out=cout,
        c_outer=TF_C_OUTER,
        outer_width=tf_outer_width(N, n_filters_scale),
        outer_tensors=outer_used,
        narrow_head=pad_object,
        use_polar=use_polar,
        padded_size=padded_size,
        amp_channels=None if amp_channels == cout else amp_channels,
    )


def torch_spec(
    *,
    N: int,
    gridsize: int,
    n_filters_scale: int,
    object_big: bool,
    probe_big: bool,
    amp_activation: str,
    c_outer: int | None = None,
    cbam_encoder: bool = False,
    cbam_bottleneck: bool = False,
    batch_norm: bool = False,
    padded_size: int | None = None,
    amp_channels: int | None = None,
    outer_mask: bool = True,
) -> NetworkSpec:
    """The spec of the network upstream's torch factory builds: always the padded head, both branches,
    polar combine, an outer up-block ``32·nfs`` wide; ``c_outer`` defaults to the head channel count.
    torchapi-devel (Ptychodus 1.7) passes ``outer_mask=False`` and may pass ``amp_channels=1``."""
    channels = gridsize * gridsize
    cout = channels if object_big else 1
    return NetworkSpec(
        N=N,
        gridsize=gridsize,
        n_filters_scale=n_filters_scale,
        object_big=object_big,
        probe_big=probe_big,
        pad_object=True,
        amp_activation=amp_activation,
        channels_in=cout,
        channels_out=cout,
        c_outer=cout if c_outer is None else c_outer,
        outer_width=32 * n_filters_scale,
        outer_tensors=True,
        narrow_head=True,
        cbam_encoder=cbam_encoder,
        cbam_bottleneck=cbam_bottleneck,
        batch_norm=batch_norm,
        use_polar=True,
        padded_size=padded_size,
        amp_channels=None if amp_channels == cout else amp_channels,
        outer_mask=outer_mask,
    )


def check_padded_size(N: int, padded_size: int) -> int:
    """TF's canvas holds at least one patch: ``padded_size >= N``; raises :class:`SpecError` otherwise."""
    if padded_size < N:
        raise SpecError(f"padded_size={padded_size} is smaller than N={N}", field="padded_size")
    return int(padded_size)


def resolve_padded_size(
    spec: NetworkSpec, override: int | None = None, *, what: str, strict: bool = False
) -> int:
    """The TF canvas size: ``override`` when given, else the spec's; then :func:`check_padded_size`.

    ``what`` names the caller's need in the "unknown" message. With ``strict`` an override that
    contradicts the spec's own ``padded_size`` is an error rather than a replacement.
    Raises :class:`SpecError` (``field="padded_size"``).
    """
    if strict and override is not None and spec.padded_size is not None and override != spec.padded_size:
        raise SpecError(f"padded_size {override} contradicts the network spec's {spec.padded_size}", field="padded_size")
    value = spec.padded_size if override is None else int(override)
    if value is None:
        raise SpecError(
            f"{what} needs padded_size (TF's canvas, upstream N + (gridsize-1)·offset + jitter), which the "
            "network spec does not carry and none was given",
            field="padded_size",
        )
    return check_padded_size(spec.N, value)


def tf_padded_size(N: int, gridsize: int, offset: int, max_position_jitter: int) -> int:
    """``params.get_padded_size()`` upstream: ``N + (g-1)·offset + jitter``."""
    return N + (gridsize - 1) * offset + max_position_jitter


def _conv(out_c: int, in_c: int, k: int = 3) -> dict[str, tuple[int, ...]]:
    return {"weight": (out_c, in_c, k, k), "bias": (out_c,)}


def _cbam(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    hidden = width // CBAM_REDUCTION
    return {
        f"{prefix}.cbam.mlp1.weight": (hidden, width),
        f"{prefix}.cbam.mlp1.bias": (hidden,),
        f"{prefix}.cbam.mlp2.weight": (width, hidden),
        f"{prefix}.cbam.mlp2.bias": (width,),
        f"{prefix}.cbam.spatial.weight": (1, 2, CBAM_SPATIAL_KERNEL, CBAM_SPATIAL_KERNEL),
    }


def _batch_norm(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (width,),
        f"{prefix}.bias": (width,),
        f"{prefix}.running_mean": (width,),
        f"{prefix}.running_var": (width,),
        f"{prefix}.num_batches_tracked": (),
    }


def expected_tensors(spec: NetworkSpec) -> dict[str, tuple[int, ...]]:
    """Canonical name → shape (OIHW for convs) of every tensor the network owns, in graph order."""
    out: dict[str, tuple[int, ...]] = {}
    prev = spec.channels_in
    for i, width in enumerate(spec.encoder_widths):
        for j, cin in ((1, prev), (2, width)):
            for p, shape in _conv(width, cin).items():
                out[f"encoder.{i}.conv{j}.{p}"] = shape
            if spec.batch_norm:
                out.update(_batch_norm(f"encoder.{i}.bn{j}", width))
        if spec.cbam_encoder:
            out.update(_cbam(f"encoder.{i}", width))
        prev = width
    if spec.cbam_bottleneck:
        out.update(_cbam("bottleneck", prev))
    latent = spec.latent_width
    for head in HEADS:
        cout = spec.head_channels(head)
        cin = 128 * spec.n_filters_scale
        for d, width in enumerate(spec.decoder_widths):
            for j, c in ((1, cin), (2, width)):
                for p, shape in _conv(width, c).items():
                    out[f"{head}.decoder.{d}.conv{j}.{p}"] = shape
            cin = width
        if spec.narrow_head:
            for p, shape in _conv(cout, latent - spec.c_outer).items():
                out[f"{head}.conv1.{p}"] = shape
        if spec.outer_tensors:
            outer_in = spec.c_outer if spec.pad_object else latent
            for j, c in ((1, outer_in), (2, spec.outer_width)):
                for p, shape in _conv(spec.outer_width, c).items():
                    out[f"{head}.outer.conv{j}.{p}"] = shape
            for p, shape in _conv(cout, spec.outer_width).items():
                out[f"{head}.conv2.{p}"] = shape
    return out


def check_tensors(
    spec: NetworkSpec,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    member: str,
    allow_extra_prefixes: tuple[str, ...] = ("training.", "extra."),
    check_extra: bool = True,
) -> None:
    """Strict comparison of found tensor shapes with the spec: missing, extra or mis-shaped → error.

    Tensors under ``allow_extra_prefixes`` are auxiliary (training-only parameters) and not checked.
    With ``batch_norm`` the decoder/head batch-norm tensors upstream adds are accepted by name
    (``.bn``) since the spec cannot enumerate them exactly. ``check_extra=False`` checks only that
    every expected tensor is present with its shape (a caller that vets the rest itself).
    """
    expected = expected_tensors(spec)
    for name, shape in expected.items():
        if name not in shapes:
            raise SpecError(f"missing tensor {name!r} (expected shape {list(shape)} for this spec)", member=member)
        got = tuple(shapes[name])
        if got != shape:
            raise SpecError(
                f"tensor {name!r} has shape {list(got)} but the spec (N={spec.N}, gridsize={spec.gridsize}, "
                f"n_filters_scale={spec.n_filters_scale}, c_outer={spec.c_outer}"
                f"{'' if spec.amp_channels is None else f', amp_channels={spec.amp_channels}'}) requires {list(shape)}",
                member=member,
            )
    if not check_extra:
        return
    for name in shapes:
        if name in expected or name.startswith(allow_extra_prefixes):
            continue
        if spec.batch_norm and ".bn" in name:
            continue
        raise SpecError(f"unexpected tensor {name!r} not produced by this network spec", member=member)
