"""Image quality of a stitched object against a reference: SSIM, PSNR and FRC resolution (``quality`` in reconstruct.json).

Why: parity (``compare.py``) says whether two reconstructions are *the same*; a user with a ground truth (a
simulated scan's ``objectGuess``, or another object given with ``--compare``) asks how *good* one is. The
figures follow the usual ptychography practice:

- **alignment** first, because a reconstruction is defined only up to a global phase and (with upstream's
  normalisation) a global amplitude scale: ours is multiplied by the complex least-squares factor
  ``c = Σ conj(o)·r / Σ |o|²`` over the compared region (no phase-ramp removal: the scan positions fix the
  object's placement);
- **region**: the rows and columns our stitched canvas covers (uncovered pixels are exactly 0), less a 3-px
  edge where jittered scan positions leave pixels uncovered;
- **SSIM and PSNR** of amplitude and of phase, from scikit-image (``structural_similarity`` with its default
  7-px window, ``peak_signal_noise_ratio``), each with ``data_range`` = the reference's peak-to-peak value;
- **FRC** of the two complex images (Hann-windowed square crop), ring ``k`` = frequencies with
  ``k − ½ ≤ |f|·n < k + ½``; the resolution is the first ring, from 1, where the curve falls below the
  **half-bit threshold** (van Heel & Schatz 2005), given as a period in pixels ``n/k``; ``null`` when the
  curve stays above it up to Nyquist (then the resolution is at least 2 px).

scipy (reference resampling) and scikit-image are the ``reconstruct`` extra's, imported inside functions.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import FormatError

MAX_PIXELS = 4096 * 4096  # quality is skipped (with a note) beyond this compared area
FRC_THRESHOLD = "half-bit"
EDGE_MARGIN = 3  # px trimmed from each side of the covered box
SSIM_WINDOW = 7  # structural_similarity's default win_size: the smallest region SSIM is defined on


def canvas_axes(size: int, com_xy: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Where our canvas' rows and columns fall in the dataset's pixel frame (``objectGuess``'s), as float64.

    canvas (r, c) = object(r − P/2 + com_y, c − P/2 + com_x): upstream's placement (docs/user-guide.md); the
    one definition behind the quality reference and the comparison image.
    """
    cx, cy = (float(v) for v in com_xy)
    return np.arange(size, dtype=np.float64) - size / 2 + cy, np.arange(size, dtype=np.float64) - size / 2 + cx


def reference_on_canvas(reference: np.ndarray, size: int, com_xy: Iterable[float]) -> np.ndarray:
    """An object in the dataset's pixel frame (``objectGuess``) sampled bilinearly onto our canvas
    (:func:`canvas_axes`); outside the object the result is NaN (undefined: :func:`quality_report` then
    notes instead of comparing against zeros, which the alignment would match by scaling ours to 0)."""
    from scipy.ndimage import map_coordinates

    rr, cc = np.meshgrid(*canvas_axes(size, com_xy), indexing="ij")
    sampled = map_coordinates(np.asarray(reference, np.complex128), [rr, cc], order=1, mode="constant", cval=np.nan)
    return sampled.astype(np.complex64)


def covered_box(obj: np.ndarray) -> tuple[slice, slice] | None:
    """Rows/cols of the canvas that some patch covers (uncovered pixels are exactly 0); None if none is."""
    rows = np.flatnonzero(np.any(obj != 0, axis=1))
    cols = np.flatnonzero(np.any(obj != 0, axis=0))
    if rows.size == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def covered_region(obj: np.ndarray, margin: int = EDGE_MARGIN) -> tuple[slice, slice]:
    """:func:`covered_box` less ``margin`` px per side (jittered positions leave the outermost rows only partly
    covered), never less than 1 px."""
    box = covered_box(obj)
    if box is None:
        raise FormatError("the reconstruction is zero everywhere; no region to compare", field="object")
    return _less_margin(box, margin)


def _less_margin(box: tuple[slice, slice], margin: int) -> tuple[slice, slice]:
    def shrink(span: slice) -> slice:
        m = max(0, min(margin, (span.stop - span.start - 1) // 2))
        return slice(span.start + m, span.stop - m)

    return shrink(box[0]), shrink(box[1])


def align(ours: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, complex]:
    """``c·ours`` with the complex factor ``c`` minimising ``Σ |c·ours − ref|²`` (global phase and scale)."""
    o, r = ours.astype(np.complex128), ref.astype(np.complex128)
    energy = float(np.sum(np.abs(o) ** 2))
    c = complex(np.sum(np.conj(o) * r) / energy) if energy > 0 else 1.0 + 0.0j
    return c * o, c


def half_bit(n_ring: np.ndarray) -> np.ndarray:
    """The half-bit threshold curve for rings of ``n_ring`` pixels (van Heel & Schatz 2005)."""
    root = np.sqrt(np.maximum(n_ring, 1))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def frc(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Fourier ring correlation of two complex images (cropped to a centred square, Hann-windowed)."""
    n = min(a.shape)
    r0, c0 = (a.shape[0] - n) // 2, (a.shape[1] - n) // 2
    win = np.outer(np.hanning(n), np.hanning(n))
    fa = np.fft.fftshift(np.fft.fft2(a[r0:r0 + n, c0:c0 + n] * win))
    fb = np.fft.fftshift(np.fft.fft2(b[r0:r0 + n, c0:c0 + n] * win))
    yy, xx = np.mgrid[:n, :n] - n // 2
    ring = np.rint(np.hypot(yy, xx)).astype(np.int64).ravel()
    rings = n // 2 + 1
    keep = ring < rings
    ring = ring[keep]
    cross = (fa * np.conj(fb)).ravel()[keep]
    num = np.bincount(ring, cross.real, minlength=rings)
    num_i = np.bincount(ring, cross.imag, minlength=rings)
    pa = np.bincount(ring, (np.abs(fa) ** 2).ravel()[keep], minlength=rings)
    pb = np.bincount(ring, (np.abs(fb) ** 2).ravel()[keep], minlength=rings)
    count = np.bincount(ring, minlength=rings)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(pa * pb > 0, np.hypot(num, num_i) / np.sqrt(pa * pb), 0.0)
    threshold = half_bit(count)
    below = [k for k in range(1, rings) if curve[k] < threshold[k]]
    crossing = below[0] if below else None
    return {"threshold": FRC_THRESHOLD, "size": int(n), "crossing_ring": crossing,
            "frequency": None if crossing is None else round(crossing / n, 6),
            "resolution_px": None if crossing is None else round(n / crossing, 4),
            "curve": [round(float(v), 6) for v in curve[1:]]}


def _pair(ref: np.ndarray, test: np.ndarray) -> dict[str, float | None]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    span = float(np.ptp(ref)) or float(np.max(np.abs(ref))) or 1.0
    ssim = structural_similarity(ref, test, data_range=span)
    with np.errstate(divide="ignore"):  # identical images: PSNR is +inf (reported as null), not a warning
        psnr = peak_signal_noise_ratio(ref, test, data_range=span)
    return {"ssim": round(float(ssim), 6), "psnr_db": round(float(psnr), 4) if math.isfinite(psnr) else None}


def image_quality(ours: np.ndarray, reference: np.ndarray, *, region: tuple[slice, slice] | None = None) -> dict[str, Any]:
    """SSIM/PSNR of amplitude and phase and the FRC resolution of ``ours`` against ``reference`` (same canvas)."""
    if ours.shape != reference.shape:
        raise FormatError(f"reference is {list(reference.shape)} but the object is {list(ours.shape)}",
                          field="object")
    rows, cols = region if region is not None else covered_region(ours)
    o, r = ours[rows, cols], reference[rows, cols]
    if min(o.shape) < SSIM_WINDOW:
        raise FormatError(f"the compared region {list(o.shape)} is smaller than SSIM's {SSIM_WINDOW}-px window",
                          field="object")
    aligned, c = align(o, r)
    r64 = r.astype(np.complex128)  # align's own copy of r is not returned
    return {
        "region": {"rows": [rows.start, rows.stop], "cols": [cols.start, cols.stop]},
        "alignment": {"scale": round(abs(c), 8), "phase_rad": round(math.atan2(c.imag, c.real), 8)},
        "amplitude": _pair(np.abs(r64), np.abs(aligned)),
        "phase": _pair(np.angle(r64), np.angle(aligned)),
        "frc": frc(aligned, r64),
    }


def quality_report(ours: np.ndarray, reference: np.ndarray, *, source: str, path: str | None) -> dict[str, Any]:
    """The ``quality`` key: the figures plus where the reference came from, or a note why none were computed.

    Why a note and not an error: the figures are an addition to a finished reconstruction (its object is
    already stitched); a reconstruction they cannot be computed for is still written and reported.
    """
    out: dict[str, Any] = {"reference": {"source": source, "path": path}}
    box = covered_box(ours)
    if box is None:
        out["note"] = "not computed: the reconstruction is zero everywhere"
        return out
    region = _less_margin(box, EDGE_MARGIN)
    height, width = (region[0].stop - region[0].start), (region[1].stop - region[1].start)
    if height * width > MAX_PIXELS:
        out["note"] = f"not computed: the covered region has {height * width} pixels (bound {MAX_PIXELS})"
    elif min(height, width) < SSIM_WINDOW:
        out["note"] = f"not computed: the covered region {height}×{width} is smaller than SSIM's {SSIM_WINDOW}-px window"
    elif undefined := int(np.count_nonzero(~np.isfinite(reference[region]))):
        out["note"] = (f"not computed: the reference is undefined (non-finite, or outside objectGuess) at {undefined} "
                       f"of the {height * width} compared pixels")
    elif not np.isfinite(ours[region]).all():
        out["note"] = "not computed: the reconstruction has non-finite pixels in the compared region"
    else:
        out.update(image_quality(ours, reference, region=region))
    return out


def summary(quality: dict[str, Any]) -> str:
    """One line for people: ``amplitude SSIM 0.91, PSNR 24.1 dB; phase …; FRC …``."""
    if "amplitude" not in quality:
        return quality.get("note", "not computed")
    res = quality["frc"]["resolution_px"]
    frc_text = f"{res:.2f} px" if res is not None else "< 2 px (above threshold to Nyquist)"

    def psnr(v: float | None) -> str:
        return "inf" if v is None else f"{v:.1f}"

    return (f"amplitude SSIM {quality['amplitude']['ssim']:.3f}, PSNR {psnr(quality['amplitude']['psnr_db'])} dB; "
            f"phase SSIM {quality['phase']['ssim']:.3f}, PSNR {psnr(quality['phase']['psnr_db'])} dB; "
            f"FRC ({quality['frc']['threshold']}) resolution {frc_text}")
