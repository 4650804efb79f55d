"""Seeded simulated scans for the trained sample model: its probe, a training object and a held-out one.

Why one module for both ends: ``scripts/train_sample_model.py`` trains the sample network on a scan
simulated here, and ``ptycho-bridge sample`` writes the *held-out* scan from the same probe and the same
forward model, so the demo reconstructs data the model was built for but never saw (another object).

Forward model (upstream's simulation and the autoencoder's physics tail, ../shared/docs/upstream-architecture.md
§1.5 and the TF ``PadAndDiffractLayer``): the far-field amplitude ``|fftshift(fft2(probe · patch))| / N`` of an
``N × N`` object patch centred on each scan position, then Poisson counts at ``nphotons`` per pattern
(intensities ``nphotons · |Ψ|² / Σ|Ψ|²``), returned as amplitudes ``sqrt(counts)``; the pipeline's own
normalisation (``s``) removes the photon scale again.

The probe is a soft-edged disk of radius ``0.8·N/4`` (zero, to 2e-3, outside the centre square the
``probe_big=False`` network fills) with a strong defocus (quadratic) phase and a seeded
aberration: a real, centro-symmetric probe would leave single-pattern phase retrieval with its twin-image
ambiguity (``conj(P·O)(−r)`` has the same far field), which a defocus breaks. Its amplitude is scaled so that
``Σ|P|² = 4·(N/2)²``: normalised patterns then ask the network for object amplitudes near 0.5, inside the
sigmoid head's range (upstream scales its probe with ``probe_scale`` for the same reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptycho_bridge.lazy import numpy as np

SIM_SEED = 20261205
NPHOTONS = 1e9
PROBE_ENERGY = 4.0  # Σ|P|² in units of (N/2)²


def trained_probe(N: int = 64) -> np.ndarray:
    """The trained sample's probe, complex64 ``(N, N)`` (seeded, identical everywhere)."""
    rng = np.random.default_rng(SIM_SEED)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    r = np.hypot(xx, yy) / (N / 4)
    amp = 0.5 * (1 - np.tanh((r - 0.8) / 0.06))  # soft edge at 0.8·N/4: ~0 outside the centre square
    aberration = sum(rng.uniform(-0.4, 0.4) * np.cos(k * np.arctan2(yy, xx) + rng.uniform(0, 2 * np.pi)) * r ** k
                     for k in (1, 2, 3))
    phase = 4.0 * r ** 2 + aberration
    probe = amp * np.exp(1j * phase)
    probe *= math.sqrt(PROBE_ENERGY * (N / 2) ** 2 / float(np.sum(np.abs(probe) ** 2)))
    return probe.astype(np.complex64)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A Gaussian random field with correlation length ``scale`` px, normalised to [0, 1]."""
    noise = rng.standard_normal(shape)
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    field = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-2 * (np.pi * scale) ** 2 * (fx ** 2 + fy ** 2))).real
    field -= field.min()
    return field / max(float(field.max()), 1e-12)


def training_object(size: int = 320, seed: int = SIM_SEED + 1) -> np.ndarray:
    """A textured object with features at many scales: random fields plus disks, bars and rings."""
    rng = np.random.default_rng(seed)
    amp = 0.35 + 0.35 * _smooth_field(rng, (size, size), 6.0) + 0.15 * _smooth_field(rng, (size, size), 1.5)
    phase = 1.2 * _smooth_field(rng, (size, size), 8.0) - 0.6 + 0.3 * _smooth_field(rng, (size, size), 2.0)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    for _ in range(size * size // 900):
        cy, cx = rng.uniform(0, size, 2)
        kind, rad = rng.integers(3), rng.uniform(2, 10)
        if kind == 0:
            inside = np.hypot(yy - cy, xx - cx) < rad
        elif kind == 1:
            ang = rng.uniform(0, np.pi)
            along = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
            across = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
            inside = (np.abs(along) < 3 * rad) & (np.abs(across) < rad / 3 + 0.8)
        else:
            inside = np.abs(np.hypot(yy - cy, xx - cx) - rad) < 1.2
        amp = np.where(inside, np.clip(amp + rng.uniform(-0.3, 0.3), 0.1, 1.0), amp)
        phase = np.where(inside, phase + rng.uniform(-0.8, 0.8), phase)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def siemens_star(size: int, *, spokes: int = 16) -> np.ndarray:
    """The held-out object: a Siemens star (the resolution target) in amplitude and phase, with a ring."""
    yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2).astype(np.float64)
    r, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    star = (np.cos(spokes / 2 * theta) > 0) & (r < 0.42 * size) & (r > 2)
    ring = np.abs(r - 0.46 * size) < 1.5
    amp = np.where(star | ring, 0.9, 0.45)
    phase = np.where(star, 0.7, 0.0) + np.where(ring, -0.5, 0.0) + 0.3 * np.cos(2 * np.pi * xx / size)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


@dataclass
class Scan:
    """A simulated scan in upstream's dataset layout (``diffraction`` amplitudes, float64 coordinates)."""

    diffraction: np.ndarray  # float32 (M, N, N)
    x: np.ndarray  # float64 (M,)
    y: np.ndarray  # float64 (M,)
    probe: np.ndarray  # complex64 (N, N)
    obj: np.ndarray  # complex64 (H, W)

    def as_dataset(self) -> dict[str, np.ndarray]:
        return {"diffraction": self.diffraction, "xcoords": self.x, "ycoords": self.y, "xcoords_start": self.x.copy(),
                "ycoords_start": self.y.copy(), "probeGuess": self.probe, "objectGuess": self.obj}


def far_field(probe: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """``|fftshift(fft2(probe · patch))| / N`` for patches ``(M, N, N)`` (the physics tail, no noise)."""
    N = probe.shape[-1]
    return np.abs(np.fft.fftshift(np.fft.fft2(probe * patches), axes=(-2, -1))) / N


def simulate_scan(obj: np.ndarray, probe: np.ndarray, *, step: float, seed: int, jitter: float = 1.0,
                  nphotons: float | None = NPHOTONS) -> Scan:
    """Raster scan of ``obj`` (jittered grid, ``step`` px) at integer positions; Poisson noise unless ``nphotons`` is None."""
    rng = np.random.default_rng(seed)
    N = probe.shape[-1]
    margin = N // 2 + 2
    ny = int((obj.shape[0] - 2 * margin) // step) + 1
    nx = int((obj.shape[1] - 2 * margin) // step) + 1
    gy, gx = np.divmod(np.arange(ny * nx), nx)
    x = np.clip(margin + step * gx + rng.uniform(-jitter, jitter, gx.size), margin, obj.shape[1] - margin)
    y = np.clip(margin + step * gy + rng.uniform(-jitter, jitter, gy.size), margin, obj.shape[0] - margin)
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    patterns = np.empty((x.size, N, N), np.float32)
    for i0 in range(0, x.size, 256):
        idx = range(i0, min(x.size, i0 + 256))
        patches = np.stack([obj[yi[i] - N // 2:yi[i] + N // 2, xi[i] - N // 2:xi[i] + N // 2] for i in idx])
        amp = far_field(probe, patches)
        if nphotons is not None:
            intensity = amp.astype(np.float64) ** 2
            lam = nphotons * intensity / intensity.sum(axis=(-2, -1), keepdims=True)
            amp = np.sqrt(rng.poisson(lam))
        patterns[i0:i0 + len(idx)] = amp
    # positions are recorded exactly where the patterns were cut (pixel-centred patches)
    return Scan(patterns, xi.astype(np.float64), yi.astype(np.float64), probe.astype(np.complex64),
                obj.astype(np.complex64))


def held_out_scan(N: int = 64) -> Scan:
    """The demo's scan: 12 x 12 positions over a Siemens star (never seen in training), the trained sample's probe."""
    return simulate_scan(siemens_star(N + 72), trained_probe(N), step=6.0, seed=SIM_SEED + 3)
