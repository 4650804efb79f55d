"""PNG figures of objects and of differences between them (``parity --plot``, ``run --plot``).

Why: a parity table says *how much* two outputs differ; an image of ``|act − ref|`` says *where*
(centre or border, one patch or all), which is the first question after a failure. Every figure is
amplitude and phase of the reference object plus, when there is something to compare with, the
``|act − ref|`` (complex modulus, the quantity the parity rule bounds) and the wrapped phase difference,
each with its own colour bar.

matplotlib (the ``reconstruct`` extra) is imported inside the functions only, with the Agg backend
(no display needed); :func:`require_plotting` is called by the CLI *before* any work, so a missing
matplotlib is one ``error:`` line, not a traceback after a minute of computing. Files are written
atomically (:mod:`ptycho_bridge.io.atomic`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.io.atomic import atomic_write
from ptycho_bridge.ops.extras import require

MAX_ROWS = 6  # comparisons drawn in one figure; the rest are named in the title


@dataclass
class Panel:
    """One row of a figure: a title and a 2-D complex object, optionally with the object it is compared to."""

    title: str
    reference: np.ndarray  # complex [H, W]
    actual: np.ndarray | None = None  # complex [H, W]; None: draw the reference only


def require_plotting(option: str = "--plot") -> None:
    """Refuse early, naming the install command, when matplotlib is missing."""
    require("reconstruct", option, packages=("matplotlib",))


def worst_patch(actual: np.ndarray, reference: np.ndarray) -> tuple[int, ...]:
    """Leading indices (sample, channel) of the 2-D patch where ``|act − ref|`` is largest."""
    a = np.asarray(actual)
    diff = np.abs(a.astype(np.complex128) - np.asarray(reference).astype(np.complex128))
    diff = np.where(np.isfinite(diff), diff, np.inf)
    lead = a.shape[:-2]
    if not lead:
        return ()
    per = diff.reshape(int(np.prod(lead)), -1).max(axis=1)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(per)), lead))


@dataclass
class Image:
    """One image of a grid figure (``reconstruct --plot``'s difference maps): pixel axes and a colour bar."""

    data: np.ndarray  # real [H, W]
    title: str
    cmap: str
    symmetric: bool = False  # colour limits ±max|data| (differences)


def save_grid(path: object, images: Sequence[Image], *, rows: int, cols: int, size: tuple[float, float]) -> None:
    """A grid of :class:`Image` panels, each with pixel axes and its own colour bar, as one PNG.

    ``path`` is a filename or a writable binary file (callers write into their own atomic temp folder)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    for i, img in enumerate(images):
        ax = fig.add_subplot(rows, cols, i + 1)
        lim = (float(np.max(np.abs(img.data))) or 1.0) if img.symmetric else None
        im = ax.imshow(img.data, cmap=img.cmap, origin="upper", interpolation="nearest",
                       vmin=-lim if lim else None, vmax=lim)
        ax.set_title(img.title)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path if hasattr(path, "write") else str(path), format="png")


def _image(fig, ax, data: np.ndarray, title: str, cmap: str) -> None:  # type: ignore[no-untyped-def]
    finite = np.isfinite(data)
    shown = np.where(finite, data, np.nan)
    im = ax.imshow(shown, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)


def save_figure(path: str | os.PathLike[str], panels: Sequence[Panel], *, title: str, force: bool = False) -> int:
    """Draw one row per panel (at most :data:`MAX_ROWS`) and write the PNG atomically; returns rows drawn."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = list(panels[:MAX_ROWS])
    if not rows:
        raise ValueError("nothing to plot")
    cols = 4 if any(p.actual is not None for p in rows) else 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.1 * cols, 2.8 * len(rows)), squeeze=False)
    for r, panel in enumerate(rows):
        ref = np.asarray(panel.reference).astype(np.complex128)
        _image(fig, axes[r][0], np.abs(ref), f"{panel.title}\namplitude", "gray")
        _image(fig, axes[r][1], np.angle(ref), "phase (rad)", "twilight")
        if cols == 4:
            if panel.actual is None:
                axes[r][2].axis("off")
                axes[r][3].axis("off")
                continue
            act = np.asarray(panel.actual).astype(np.complex128)
            _image(fig, axes[r][2], np.abs(act - ref), "|act − ref|", "magma")
            _image(fig, axes[r][3], np.abs(np.angle(act * np.conj(ref))), "|phase act − phase ref| (rad)", "magma")
    more = len(panels) - len(rows)
    fig.suptitle(title + (f"  (+{more} more not drawn)" if more > 0 else ""), fontsize=9)
    fig.tight_layout()
    try:
        with atomic_write(path, force=force) as fh:
            fig.savefig(fh, format="png", dpi=80)
    finally:
        plt.close(fig)
    return len(rows)
