"""What ``reconstruct`` writes: ``object.npz``, PNGs, optional TIFFs, the JSON report — all or nothing.

Why a folder built aside: a reconstruction is several files that belong together; a reader must
never see a half-written set. Everything is written into a temporary sibling directory
(``.OUTDIR.partial-*``) and renamed onto ``OUTDIR`` at the end; on any error the temporary directory
is removed and nothing is left. With ``force`` an existing ``OUTDIR`` is moved aside first and
deleted only after the new one is in place.

The always-written images (``amplitude.png``, ``phase.png``, ``comparison.png``) are drawn by
:mod:`.png` without matplotlib (amplitude in grey, phase in viridis as upstream's
``save_reconstruction_images``, each with a colour bar and its values): matplotlib's figure machinery
cost more than the reconstruction of a small scan. matplotlib still draws the optional ``--plot``
difference figure. The report is checked against ``schemas/reconstruct-report.schema.json`` before it
is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge import __version__
from ptycho_bridge.errors import OutputExistsError
from ptycho_bridge.ops.plots import Image, save_grid
from ptycho_bridge.ops.reconstruct.png import Panel, figure_png
from ptycho_bridge.ops.reconstruct.pipeline import ReconstructionResult
from ptycho_bridge.ops.reconstruct.quality import canvas_axes, covered_box
from ptycho_bridge.schema import validate

FORMATS = ("png", "npz", "tiff")
REPORT_NAME = "reconstruct.json"
REPORT_SCHEMA = "reconstruct-report"


def parse_formats(text: str) -> list[str]:
    """``"png,npz"`` → ``["png", "npz"]``; ``ValueError`` for anything else (npz and png are always written)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ValueError(f"unknown format(s) {bad or [text]}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


# -- images ------------------------------------------------------------------------------------------
def save_image(path: Path, image: np.ndarray, *, title: str, cmap: str, label: str) -> None:
    """One image with its colour bar (cmap per quantity, as upstream); ``label`` names the quantity."""
    Path(path).write_bytes(figure_png([Panel(image, cmap, f"{title} ({label})")]))


def guess_on_canvas(guess: np.ndarray, size: int, com_xy: Iterable[float]) -> np.ndarray:
    """``objectGuess`` resampled (nearest pixel) onto our canvas (:func:`.quality.canvas_axes`)."""
    rows, cols = canvas_axes(size, com_xy)
    r, c = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    out = np.zeros((size, size), np.complex64)
    rv, cv = (r >= 0) & (r < guess.shape[0]), (c >= 0) & (c < guess.shape[1])
    out[np.ix_(rv, cv)] = guess[np.ix_(r[rv], c[cv])]
    return out


def save_comparison(path: Path, obj: np.ndarray, guess: np.ndarray, com_xy: Iterable[float]) -> None:
    """Amplitude and phase of ours beside ``objectGuess``, both cropped to the scanned (covered) area."""
    ref = guess_on_canvas(guess, obj.shape[0], com_xy)
    rows, cols = covered_box(obj) or (slice(0, obj.shape[0]), slice(0, obj.shape[1]))
    where = f" (canvas rows {rows.start}:{rows.stop}, cols {cols.start}:{cols.stop})"
    panels = [Panel(img[rows, cols], cmap, title + where) for img, title, cmap in (
        (np.abs(obj), "reconstruction amplitude", "gray"), (np.abs(ref), "objectGuess amplitude", "gray"),
        (np.angle(obj), "reconstruction phase", "viridis"), (np.angle(ref), "objectGuess phase", "viridis"))]
    Path(path).write_bytes(figure_png(panels, cols=2, title="reconstruction beside objectGuess"))


def save_difference_plot(path: Any, ours: np.ndarray, other: np.ndarray, other_name: str) -> None:
    """Amplitude difference ``|ours| − |other|`` and phase difference ``angle(ours · conj(other))``."""
    save_grid(path, [Image(np.abs(ours) - np.abs(other), f"|ours| − |{other_name}|", "RdBu_r", symmetric=True),
                     Image(np.angle(ours * np.conj(other)), f"phase(ours) − phase({other_name})", "RdBu_r",
                           symmetric=True)], rows=1, cols=2, size=(11, 4.8))


# -- the folder --------------------------------------------------------------------------------------
def write_files(folder: Path, result: ReconstructionResult, formats: Iterable[str]) -> list[str]:
    """Every output file into ``folder`` (exists, empty); returns their names."""
    names = ["object.npz", "amplitude.png", "phase.png"]
    with open(folder / "object.npz", "wb") as fh:
        np.savez(fh, object=result.object, amplitude=result.amplitude, phase=result.phase,
                 groups=result.groups, global_offsets=result.global_offsets, local_offsets=result.local_offsets,
                 norm_scale=np.float32(result.norm_scale), intensity_scale=np.float64(result.intensity_scale))
    save_image(folder / "amplitude.png", result.amplitude, title="amplitude", cmap="gray", label="|object|")
    save_image(folder / "phase.png", result.phase, title="phase", cmap="viridis", label="phase (rad)")
    if result.object_guess is not None:
        save_comparison(folder / "comparison.png", result.object, result.object_guess, result.canvas["com_xy"])
        names.append("comparison.png")
    if "tiff" in formats:
        import tifffile

        tifffile.imwrite(folder / "amplitude.tiff", result.amplitude.astype(np.float32))
        tifffile.imwrite(folder / "phase.tiff", result.phase.astype(np.float32))
        names += ["amplitude.tiff", "phase.tiff"]
    return names


def refuse_existing_dir(outdir: Path, *, force: bool) -> None:
    if outdir.exists() and not force:
        raise OutputExistsError(f"{outdir} exists; pass --force to replace it")
    if outdir.exists() and not outdir.is_dir():
        raise OutputExistsError(f"{outdir} exists and is not a folder")


def write_outputs(outdir: str | Path, result: ReconstructionResult, report: dict[str, Any], *,
                  formats: Iterable[str] = ("png", "npz"), force: bool = False) -> Path:
    """Build the folder aside, validate the report, rename it onto ``outdir`` (all or nothing)."""
    target = Path(outdir)
    refuse_existing_dir(target, force=force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        report["files"] = sorted(write_files(tmp, result, formats) + [REPORT_NAME])
        validate(REPORT_SCHEMA, report, member=REPORT_NAME)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
        os.rename(tmp, target)
        tmp = None  # type: ignore[assignment]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not target.exists():  # put the previous folder back
                os.replace(old / "previous", target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def build_report(result: ReconstructionResult, *, formats: Iterable[str], comparison: dict[str, Any] | None,
                 argv: dict[str, Any], quality: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``reconstruct.json`` document (schema ``reconstruct-report``); ``files`` is filled in on write.
    ``quality``: the image-quality figures (``compare.quality_for``), null without a reference."""
    info = result.info
    report = {
        "tool": "ptycho-bridge", "version": __version__, "command": "reconstruct",
        "archive": {"path": info["archive"], "sha256": info["archive_sha256"], "backend": info["backend"],
                    "N": info["N"], "gridsize": info["gridsize"], "padded_size": info["padded_size"],
                    "padded_size_source": info["padded_size_source"],
                    "reassembly_centring": info["reassembly_centring"]},
        "dataset": {"path": info["dataset"], "format": info["dataset_format"], "patterns": info["n_patterns_file"],
                    "keys": info["keys_used"], "reader": info["patterns"]},
        "engine": info["engine"],
        "cache": info.get("cache"),
        "choices": {**argv, "n_groups": info["n_groups"], "subsample_seed": info["subsample_seed"],
                    "centring": info["centring"], "centring_batch": info["centring_batch"],
                    "formats": list(formats)},
        "groups": {"count": int(result.groups.shape[0]), "per_group": int(result.groups.shape[1]),
                   "patterns_used": int(np.unique(result.groups).size)},
        "norm_scale": result.norm_scale, "intensity_scale": result.intensity_scale,
        "canvas": {"size": result.canvas["size"], "pad": result.canvas["pad"], "crop": result.canvas["crop"],
                   "com_xy": result.canvas["com_xy"], "max_canvas": result.canvas["max_canvas"]},
        "timings": {k: round(float(v), 6) for k, v in result.timings.items()},
        "comparison": comparison,
        "quality": quality,
        "notes": list(result.notes),
        "files": [],
    }
    if info.get("distributed") is not None:  # a cluster run (issue 21): scheduler, workers, per-stage times, bytes
        report["distributed"] = info["distributed"]
    return report
