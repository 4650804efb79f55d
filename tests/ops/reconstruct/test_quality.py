"""Image-quality figures (SSIM, PSNR, FRC) on crafted objects whose answers are known without the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptycho_bridge.errors import FormatError
from ptycho_bridge.ops.reconstruct.quality import (
    covered_region,
    frc,
    half_bit,
    image_quality,
    quality_report,
    reference_on_canvas,
    summary,
)


def _object(n: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth complex object with structure at several scales (amplitude 0.3-1, phase ±1 rad)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] / n
    amp = 0.65 + 0.2 * np.sin(9 * xx + 3 * yy) + 0.1 * np.cos(23 * yy) + 0.02 * rng.standard_normal((n, n))
    phase = np.sin(7 * yy) * np.cos(5 * xx)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def test_identical_up_to_a_global_complex_factor_is_perfect() -> None:
    ref = _object()
    factor = 2.0 - 1.0j  # a reconstruction is defined up to a global phase and scale
    q = image_quality((ref / factor).astype(np.complex64), ref, region=(slice(0, 64), slice(0, 64)))
    assert q["amplitude"]["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert q["phase"]["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert q["amplitude"]["psnr_db"] is None or q["amplitude"]["psnr_db"] > 100
    assert q["alignment"]["scale"] == pytest.approx(abs(factor), rel=1e-5)
    assert q["alignment"]["phase_rad"] == pytest.approx(math.atan2(factor.imag, factor.real), abs=1e-5)
    assert q["frc"]["crossing_ring"] is None and q["frc"]["resolution_px"] is None
    assert min(q["frc"]["curve"]) > 0.999


def test_psnr_matches_its_definition_after_alignment() -> None:
    ref = _object()
    noise = 0.03 * np.random.default_rng(1).standard_normal(ref.shape)
    ours = (ref * np.exp(0.4j) * 0.5 + noise).astype(np.complex64)
    q = image_quality(ours, ref, region=(slice(0, 64), slice(0, 64)))
    o, r = ours.astype(np.complex128), ref.astype(np.complex128)
    c = np.vdot(o, r) / np.vdot(o, o)  # least-squares factor, computed here independently
    mse = np.mean((np.abs(r) - np.abs(c * o)) ** 2)
    span = np.abs(r).max() - np.abs(r).min()
    assert q["amplitude"]["psnr_db"] == pytest.approx(10 * math.log10(span ** 2 / mse), abs=1e-3)
    assert 0.3 < q["amplitude"]["ssim"] < 0.99


def test_frc_resolution_follows_the_blur() -> None:
    """Blur plus independent noise: the stronger the blur, the lower the frequency where FRC crosses half-bit."""
    ref = _object(128, seed=3) + 0.3 * np.random.default_rng(4).standard_normal((128, 128))
    f = np.fft.fftfreq(128)
    noise = 0.02 * np.random.default_rng(5).standard_normal((128, 128))
    resolutions = []
    for sigma in (0.5, 2.0, 4.0):  # Gaussian blur of width sigma px, applied in Fourier space
        kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
        blurred = np.fft.ifft2(np.fft.fft2(ref) * kernel) + noise
        resolutions.append(frc(blurred, ref)["resolution_px"] or 2.0)
    assert resolutions[0] < resolutions[1] < resolutions[2]
    assert resolutions[2] > 8  # σ = 4 px keeps nothing finer than ~2πσ/√(ln ...) ≈ 10-20 px


def test_frc_of_unrelated_images_crosses_at_once() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((64, 64)), rng.standard_normal((64, 64))
    assert frc(a, b)["crossing_ring"] <= 3


def test_half_bit_threshold_known_values() -> None:
    # van Heel & Schatz (2005): 1 for a single-pixel ring, 0.2071/1.2071 = 0.1716 for very large rings
    assert half_bit(np.array([1]))[0] == pytest.approx(1.0, abs=1e-4)
    assert half_bit(np.array([10**12]))[0] == pytest.approx(0.2071 / 1.2071, abs=1e-5)


def test_reference_on_canvas_places_and_interpolates() -> None:
    guess = _object(80)
    # canvas (r, c) = object(r - P/2 + com_y, c - P/2 + com_x): integer com is a plain slice
    on = reference_on_canvas(guess, 40, (41.0, 37.0))
    assert np.allclose(on, guess[37 - 20:37 + 20, 41 - 20:41 + 20], atol=1e-6)
    half = reference_on_canvas(guess, 40, (41.5, 37.0))  # half a pixel in x: the mean of the two neighbours
    assert np.allclose(half, 0.5 * (guess[17:57, 21:61] + guess[17:57, 22:62]), atol=1e-6)
    beyond = reference_on_canvas(guess, 40, (70.0, 37.0))  # canvas cols 50..89 of an 80-col object
    assert np.isnan(beyond[:, 30:]).all() and np.isfinite(beyond[:, :30]).all()  # undefined, not zero


def test_region_and_refusals() -> None:
    obj = np.zeros((50, 50), np.complex64)
    obj[10:40, 5:45] = 1
    assert covered_region(obj) == (slice(13, 37), slice(8, 42))  # covered box less 3 px per side
    with pytest.raises(FormatError, match="zero everywhere"):
        covered_region(np.zeros((8, 8), np.complex64))
    with pytest.raises(FormatError, match="reference is"):
        image_quality(obj, obj[:40])
    with pytest.raises(FormatError, match="7-px window"):
        image_quality(obj, obj, region=(slice(0, 5), slice(0, 50)))
    q = image_quality(obj * _object(50), _object(50))
    assert "amplitude SSIM" in summary(q) and "FRC (half-bit)" in summary(q)


def test_report_notes_what_it_cannot_compute() -> None:
    # the figures are an addition to a finished reconstruction: a zero or tiny one is noted, not refused
    ref = _object(50)
    zero = quality_report(np.zeros((50, 50), np.complex64), ref, source="objectGuess", path=None)
    assert zero == {"reference": {"source": "objectGuess", "path": None},
                    "note": "not computed: the reconstruction is zero everywhere"}
    tiny = np.zeros((50, 50), np.complex64)
    tiny[20:32, 10:40] = 1  # 12 rows, less 3 px per side: 6 < SSIM's 7-px window
    q = quality_report(tiny, ref, source="compare", path="other.npz")
    assert q["note"] == "not computed: the covered region 6×24 is smaller than SSIM's 7-px window"
    assert "amplitude" not in q and summary(q) == q["note"]
    tiny[20:33] = tiny[20]  # 13 rows → 7: computed
    assert quality_report(tiny, ref, source="compare", path=None)["region"] == {"rows": [23, 30], "cols": [13, 37]}


def test_report_notes_an_undefined_reference() -> None:
    # a zero-filled reference would be matched by scaling ours to 0 (SSIM 1); NaN would give NaN figures in JSON
    obj = _object(50)
    ref = obj.copy()
    ref[25, 25] = np.nan
    q = quality_report(obj, ref, source="objectGuess", path=None)
    assert q["note"] == ("not computed: the reference is undefined (non-finite, or outside objectGuess) at 1 of the "
                         "1936 compared pixels")
    outside = reference_on_canvas(_object(30), 50, (15.0, 15.0))  # a 30-px objectGuess under a 44-px region
    assert "outside objectGuess" in quality_report(obj, outside, source="objectGuess", path=None)["note"]
    ours = obj.copy()
    ours[10, 10] = np.inf
    assert quality_report(ours, obj, source="compare", path=None)["note"] == (
        "not computed: the reconstruction has non-finite pixels in the compared region")
