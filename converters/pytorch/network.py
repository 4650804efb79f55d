"""The PyTorch engine: build, load and run the PtychoPINN CNN core from a :class:`NetworkSpec`.

Why: upstream's own torch classes need the whole upstream package (configs, Lightning, physics) and
load with ``strict=False``; we need a small module that reproduces upstream's ``forward_predict``
core *exactly* for every network the spec can describe — torch archives (CBAM, ``c_outer`` from
the config) and TF archives (``c_outer=4``, TF's outer-branch width, TF's amp activations, the
``pad_object=False`` head) — and that refuses tensors that do not fit instead of silently keeping
random weights. ``../shared/docs/upstream-architecture.md`` §1.3, §1.4 and §2.2 give the formulas.

The module's parameter names *are* the canonical names (``encoder.0.conv1.weight`` …), so
``module.state_dict()`` keys equal :func:`ptycho_bridge.spec.network.expected_tensors`; upstream's key
names are produced only through :mod:`ptycho_bridge.spec.mapping`.

Convention: :func:`run` takes the canonical input ``x_norm`` float32 ``[B, C, N, N]`` (see
:mod:`ptycho_bridge.spec.conventions`) and returns the per-patch object complex64 ``[B, Cout, N, N]``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from converters.pytorch.read import canonical_state_dict
from converters.pytorch.write import (
    state_dict_from_canonical,  # numpy-only; re-exported here
)
from ptycho_bridge.errors import FormatError, SpecError
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX
from ptycho_bridge.spec.network import (
    AMP_ACTIVATION_KIND,
    CBAM_REDUCTION,
    CBAM_SPATIAL_KERNEL,
    NetworkSpec,
    check_tensors,
    expected_tensors,
)

_SOURCE = "canonical tensors"


# -- building blocks (names chosen so that parameter paths are the canonical names) -------------
def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """3×3 stride-1 'same' conv: TF 'same' and torch ``padding=1`` pad one zero pixel per side."""
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class CBAM(nn.Module):
    """Upstream's CBAM: channel gate (avg- and max-pooled shared MLP) then spatial gate.

    Channel gate: ``s = σ(MLP(avgpool(x)) + MLP(maxpool(x)))``, MLP = Linear(C, C//16) → ReLU →
    Linear(C//16, C). Spatial gate: ``σ(conv7×7([max_c x, mean_c x]))`` with padding 3, no bias,
    no batch norm. Each gate multiplies its input.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels // CBAM_REDUCTION
        self.mlp1 = nn.Linear(channels, hidden)
        self.mlp2 = nn.Linear(hidden, channels)
        k = CBAM_SPATIAL_KERNEL
        self.spatial = nn.Conv2d(2, 1, kernel_size=k, stride=1, padding=k // 2, bias=False)

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp2(F.relu(self.mlp1(torch.flatten(pooled, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.size(2), x.size(3))
        # Full-window pooling as upstream does it (avg_pool2d/max_pool2d), same summation order.
        att = self._mlp(F.avg_pool2d(x, size, stride=size)) + self._mlp(F.max_pool2d(x, size, stride=size))
        x = x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class EncoderBlock(nn.Module):
    """conv → ReLU → conv → ReLU → [CBAM] → MaxPool 2×2 (even sizes: TF 'same' == torch)."""

    def __init__(self, cin: int, width: int, cbam: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, width)
        self.conv2 = _conv3x3(width, width)
        self.cbam = CBAM(width) if cbam else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        if self.cbam is not None:
            x = self.cbam(x)
        return F.max_pool2d(x, kernel_size=2)


class UpBlock(nn.Module):
    """conv → ReLU → conv → ReLU → nearest ×2 (an exact copy in both frameworks)."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, width)
        self.conv2 = _conv3x3(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Bottleneck(nn.Module):
    """Holds the optional bottleneck CBAM so its canonical prefix is ``bottleneck.cbam``."""

    def __init__(self, width: int, cbam: bool) -> None:
        super().__init__()
        self.cbam = CBAM(width) if cbam else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(x) if self.cbam is not None else x


_AMP_FUNCTIONS = {"sigmoid": torch.sigmoid, "swish": F.silu, "softplus": F.softplus, "relu": F.relu}


def _amp_activation(name: str):  # type: ignore[no-untyped-def]
    """The torch function of an amp activation name (validated by :func:`_refuse_unsupported`)."""
    return _AMP_FUNCTIONS[AMP_ACTIVATION_KIND[name]]


def _phase_activation(x: torch.Tensor) -> torch.Tensor:
    """π·tanh, π as a Python float times a float32 tensor (as both upstreams do)."""
    return math.pi * torch.tanh(x)


class Head(nn.Module):
    """One decoder (amp or phase): up-blocks, then the head variant the spec describes.

    - ``pad_object`` (both upstreams): ``x1 = pad_{N/4}(act(conv1(h[:, :L−c])))``; with
      ``probe_big`` add ``x2 = silu(conv2(outer(h[:, −c:]))) · border`` (border = 1 outside the
      centre square ``[N/4, 3N/4)²``); without ``outer_mask`` (upstream torchapi-devel) ``x2`` is
      added unmasked. The amp head emits ``amp_channels`` when the spec sets it (1, broadcast over the
      phase channels by the combine).
    - not ``pad_object`` (TF only): ``act(conv2(outer(h)))`` on all ``L`` latent channels, N×N
      directly, no slicing, padding or mask.
    """

    def __init__(self, spec: NetworkSpec, activation, head: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.activation = activation
        self.outer_mask = spec.outer_mask
        cout = spec.head_channels(head)
        self.pad_object = spec.pad_object
        self.probe_big = spec.probe_big
        self.c_outer = spec.c_outer
        self.pad = spec.N // 4
        latent = spec.latent_width
        blocks = []
        cin = 128 * spec.n_filters_scale
        for width in spec.decoder_widths:
            blocks.append(UpBlock(cin, width))
            cin = width
        self.decoder = nn.ModuleList(blocks)
        self.conv1 = _conv3x3(latent - spec.c_outer, cout) if spec.narrow_head else None
        if spec.outer_tensors:
            outer_in = spec.c_outer if spec.pad_object else latent
            self.outer: UpBlock | None = UpBlock(outer_in, spec.outer_width)
            self.conv2: nn.Conv2d | None = _conv3x3(spec.outer_width, cout)
        else:
            self.outer = None
            self.conv2 = None
        border = torch.ones(1, 1, spec.N, spec.N, dtype=torch.float32)
        border[..., self.pad : spec.N - self.pad, self.pad : spec.N - self.pad] = 0.0
        self.register_buffer("border", border, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.decoder:
            h = block(h)
        if not self.pad_object:
            assert self.outer is not None and self.conv2 is not None
            return self.activation(self.conv2(self.outer(h)))
        assert self.conv1 is not None
        x1 = F.pad(self.activation(self.conv1(h[:, : -self.c_outer])), (self.pad,) * 4)
        if not self.probe_big:
            return x1
        assert self.outer is not None and self.conv2 is not None
        x2 = F.silu(self.conv2(self.outer(h[:, -self.c_outer :])))
        return x1 + (x2 * self.border if self.outer_mask else x2)


class PtychoPinnCnn(nn.Module):
    """The CNN core: encoder → [bottleneck CBAM] → amp and phase heads → ``amp·exp(iφ)``."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        blocks = []
        cin = spec.channels_in
        for width in spec.encoder_widths:
            blocks.append(EncoderBlock(cin, width, spec.cbam_encoder))
            cin = width
        self.encoder = nn.ModuleList(blocks)
        self.bottleneck = Bottleneck(cin, spec.cbam_bottleneck)
        self.amp = Head(spec, _amp_activation(spec.amp_activation), "amp")
        self.phase = Head(spec, _phase_activation, "phase")

    def amp_phase(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.encoder:
            x = block(x)
        h = self.bottleneck(x)
        return self.amp(h), self.phase(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        amp, phase = self.amp_phase(x)
        if not self.spec.use_polar:  # upstream TF's .keras-era CombineComplexLayer before 2026-01-26: amp + i·phase
            return torch.complex(amp.expand_as(phase).contiguous(), phase)
        # Upstream torch's CombineComplex, in complex64 (a 1-channel amp broadcasts over the phase channels).
        return amp.to(dtype=torch.complex64) * torch.exp(1j * phase.to(dtype=torch.complex64))


# -- public API --------------------------------------------------------------------------------
def _refuse_unsupported(spec: NetworkSpec) -> None:
    spec.check()
    require(spec, "engine:torch")


def build_module(spec: NetworkSpec, tensors: Mapping[str, np.ndarray] | None = None) -> PtychoPinnCnn:
    """An ``nn.Module`` (eval mode, float32, CPU) for ``spec``, loaded strictly from ``tensors``.

    ``tensors`` holds canonical names (OIHW conv weights). Every tensor of
    :func:`expected_tensors` must be present with its exact shape and nothing else may be, except
    training-only tensors under ``training.`` (ignored). Anything else raises
    :class:`~ptycho_bridge.errors.SpecError` naming the tensor. With ``tensors=None`` the module
    keeps torch's default initialisation (useful only for shape checks).
    """
    _refuse_unsupported(spec)
    module = PtychoPinnCnn(spec)
    own = module.state_dict()
    expected = expected_tensors(spec)
    if set(own) != set(expected):  # the module and the spec index must never drift apart
        raise AssertionError(f"torch module/spec mismatch: {sorted(set(own) ^ set(expected))}")
    if tensors is not None:
        shapes = {name: tuple(np.shape(value)) for name, value in tensors.items()}
        check_tensors(spec, shapes, member=_SOURCE, allow_extra_prefixes=(TORCH_AUX_PREFIX,))
        state = {}
        for name in expected:
            value = np.asarray(tensors[name])
            if not np.issubdtype(value.dtype, np.floating):
                raise SpecError(f"tensor {name!r} has dtype {value.dtype}, expected a float type", member=_SOURCE)
            state[name] = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
        module.load_state_dict(state, strict=True)
    return module.eval().float().cpu()


def run(module: PtychoPinnCnn, x_norm: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
    """Run the core on the canonical input; complex64 ``[B, Cout, N, N]``.

    ``batch_size`` splits the batch into chunks (the result depends on chunking only at
    accumulation-order level). Runs under ``torch.inference_mode()`` (no autograd bookkeeping at all) in
    eval mode, float32, CPU.
    """
    spec = module.spec
    x = np.asarray(x_norm, dtype=np.float32)
    want = (spec.channels_in, spec.N, spec.N)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(f"x_norm must be float32 [B, {want[0]}, {want[1]}, {want[2]}], got shape {list(x.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    module.eval()
    step = x.shape[0] if batch_size is None else batch_size
    outs = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], max(step, 1)):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + step]))
            outs.append(module(chunk).numpy())
    if not outs:
        return np.zeros((0, spec.channels_out, spec.N, spec.N), dtype=np.complex64)
    whole = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)  # one chunk: no copy
    return np.ascontiguousarray(whole).astype(np.complex64, copy=False)


def canonical_from_state_dict(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Canonical tensors of an upstream torch ``state_dict`` (torch tensors or arrays), as copies.

    The key mapping is the archive reader's (:func:`converters.pytorch.read.canonical_state_dict`);
    two keys mapping onto one canonical tensor raise :class:`SpecError`.
    """
    # Imported here, not at the top, only to keep ``import converters.pytorch.network`` working as a
    # program's first import: read.py cannot be imported first (it loads ptycho_bridge, whose package

    arrays = {
        key: np.array(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value, copy=True)
        for key, value in sd.items()
    }
    try:
        tensors, _ = canonical_state_dict(arrays, member="state_dict")
    except FormatError as exc:
        raise SpecError(exc.reason, field=exc.field) from None
    return tensors


__all__ = [
    "CBAM",
    "PtychoPinnCnn",
    "build_module",
    "canonical_from_state_dict",
    "run",
    "state_dict_from_canonical",
]
