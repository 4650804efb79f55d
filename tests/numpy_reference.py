"""A float64 numpy transcription of the documented network formulas (``../shared/docs/upstream-architecture.md``).

Why a reference of our own: the variants without an upstream golden (other N, gridsize, heads, CBAM, batch
norm, the one-channel amplitude head, the legacy ``A + iφ`` combine) are checked against maths written
independently of every engine, with numpy only. Shared by the ONNX export tests and the network-history tests.
"""

from __future__ import annotations

import numpy as np

from ptycho_bridge.spec import reassembly
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors


def random_tensors(spec: NetworkSpec, seed: int, extra: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = dict(expected_tensors(spec))
    shapes.update(extra or {})
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = np.array(7, np.int64)
        elif leaf == "running_var":
            out[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif leaf == "running_mean" or leaf == "bias":
            out[name] = rng.normal(0, 0.05, shape).astype(np.float32)
        elif ".bn" in name:  # batch-norm gamma
            out[name] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            head = shape[0] <= spec.channels_out and len(shape) == 4
            std = 0.25 / np.sqrt(fan_in) if head else np.sqrt(2.0 / fan_in)
            out[name] = rng.normal(0, std, shape).astype(np.float32)
    return out


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    k = w.shape[-1]
    pad = k // 2
    H, W = x.shape[-2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((x.shape[0], w.shape[0], H, W))
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("oi,bihw->bohw", w[:, :, dy, dx], xp[:, :, dy : dy + H, dx : dx + W], optimize=True)
    return out if b is None else out + b[None, :, None, None]


def reference(spec: NetworkSpec, t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    T = {k: np.asarray(v, np.float64) for k, v in t.items()}
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    acts = {"sigmoid": sig, "swish": lambda v: v * sig(v), "softplus": lambda v: np.log1p(np.exp(v)), "relu": relu}

    def conv_bn(v, block, j):
        v = conv(v, T[f"{block}.conv{j}.weight"], T[f"{block}.conv{j}.bias"])
        bn = f"{block}.bn{j}"
        if spec.batch_norm and f"{bn}.running_mean" in T:
            shape = (1, -1, 1, 1)
            v = (v - T[f"{bn}.running_mean"].reshape(shape)) / np.sqrt(T[f"{bn}.running_var"].reshape(shape) + 1e-5)
            v = v * T[f"{bn}.weight"].reshape(shape) + T[f"{bn}.bias"].reshape(shape)
        return v

    def double(v, block):
        return relu(conv_bn(relu(conv_bn(v, block, 1)), block, 2))

    def up(v):
        return v.repeat(2, axis=2).repeat(2, axis=3)

    def cbam(v, p):
        mlp = lambda z: relu(z @ T[f"{p}.cbam.mlp1.weight"].T + T[f"{p}.cbam.mlp1.bias"]) @ T[  # noqa: E731
            f"{p}.cbam.mlp2.weight"
        ].T + T[f"{p}.cbam.mlp2.bias"]
        gate = sig(mlp(v.mean(axis=(2, 3))) + mlp(v.max(axis=(2, 3))))
        v = v * gate[:, :, None, None]
        comp = np.concatenate([v.max(axis=1, keepdims=True), v.mean(axis=1, keepdims=True)], axis=1)
        return v * sig(conv(comp, T[f"{p}.cbam.spatial.weight"], None))

    h = x.astype(np.float64)
    for i, _ in enumerate(spec.encoder_widths):
        h = double(h, f"encoder.{i}")
        if spec.cbam_encoder:
            h = cbam(h, f"encoder.{i}")
        B, C, H, W = h.shape
        h = h.reshape(B, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))
    if spec.cbam_bottleneck:
        h = cbam(h, "bottleneck")
    N, q, L = spec.N, spec.N // 4, spec.latent_width
    border = 1.0 - reassembly.centre_mask(N).astype(np.float64)
    heads = {}
    for head in ("amp", "phase"):
        act = acts[spec.amp_activation] if head == "amp" else (lambda v: np.pi * np.tanh(v))
        v = h
        for d, _ in enumerate(spec.decoder_widths):
            v = up(double(v, f"{head}.decoder.{d}"))
        if not spec.pad_object:
            heads[head] = act(conv_bn(up(double(v, f"{head}.outer")), head, 2))
            continue
        x1 = np.pad(act(conv_bn(v[:, : L - spec.c_outer], head, 1)), ((0, 0), (0, 0), (q, q), (q, q)))
        if spec.probe_big:
            x2 = conv_bn(up(double(v[:, L - spec.c_outer :], f"{head}.outer")), head, 2)
            x1 = x1 + x2 * sig(x2) * (border if spec.outer_mask else 1.0)
        heads[head] = x1
    if not spec.use_polar:  # upstream's .keras-era CombineComplexLayer before 2026-01-26: tf.complex(amp, phase)
        return np.broadcast_to(heads["amp"], heads["phase"].shape) + 1j * heads["phase"]
    return heads["amp"] * np.exp(1j * heads["phase"])  # a one-channel amp broadcasts over the phase channels
