"""``reconstruct --compare OTHER.npz``: the stitched object against another one, with parity's rules.

Why parity's rules: a reconstruction from another engine or a golden is "the same" under exactly the
tolerance ``parity`` applies to per-patch outputs (``|a − r| <= 1e-5·max|r| + 1e-5·|r|`` elementwise,
:func:`ptycho_bridge.ops.parity.compare`), here over one region, the whole canvas (a stitched object
has no ×1000 border). ``OTHER`` is read at zip level like a dataset (no pickle, bounded): key
``object`` as ``(P, P)`` or upstream's ``(P, P, 1)`` (``stitched.npz``).

:func:`quality_for` picks the reference of the image-quality figures (:mod:`.quality`): ``OTHER``'s object when
``--compare`` is given, else the dataset's ``objectGuess``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveError, FormatError
from ptycho_bridge.ops.parity import DEFAULT_RTOL, compare
from ptycho_bridge.ops.reconstruct.dataset import MAX_SMALL_BYTES, named
from ptycho_bridge.ops.reconstruct.npzfile import check_dtype, read_member, scan_npz
from ptycho_bridge.ops.reconstruct.quality import quality_report, reference_on_canvas

OBJECT_KEY = "object"


def load_object(path: str | Path) -> np.ndarray:
    """The ``object`` array of an ``.npz`` as complex64 ``(P, P)``; FormatError naming the file and key."""
    try:
        members = scan_npz(str(path))
        if OBJECT_KEY not in members:
            raise FormatError(f"required key missing (keys: {sorted(members)})", field=OBJECT_KEY)
        m = members[OBJECT_KEY]
        check_dtype(OBJECT_KEY, m.dtype)
        if m.dtype.kind not in "fc" or not (len(m.shape) == 2 or (len(m.shape) == 3 and m.shape[2] == 1)):
            raise FormatError(f"expected a (P, P) or (P, P, 1) complex array, got {m.shape} {m.dtype}",
                              field=OBJECT_KEY)
        obj = read_member(str(path), m, MAX_SMALL_BYTES).astype(np.complex64)
    except ArchiveError as exc:
        raise named(exc, str(path)) from None
    return obj.reshape(obj.shape[:2])


def compare_objects(ours: np.ndarray, other_path: str | Path, *, rtol: float = DEFAULT_RTOL,
                    atol: float | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Parity verdict of ``ours`` against ``OTHER``'s object (the reference), and that object."""
    ref = load_object(other_path)
    if ref.shape != ours.shape:
        raise FormatError(f"object is {list(ref.shape)} but ours is {list(ours.shape)} (different canvas: "
                          "other groups, crop or positions)", member=os.path.basename(str(other_path)),
                          field=OBJECT_KEY)
    whole = np.ones(ref.shape, dtype=bool)
    verdict = compare(ours[None, None], ref[None, None], rtol=rtol, atol=atol, regions={"object": whole})
    verdict["reference"] = str(other_path)
    return verdict, ref


def quality_for(obj: np.ndarray, *, other: np.ndarray | None = None, other_path: str | Path | None = None,
                object_guess: np.ndarray | None = None, com_xy: Any = None) -> dict[str, Any] | None:
    """The ``quality`` key of the report: against ``--compare``'s object when given, else the dataset's
    ``objectGuess`` (sampled onto our canvas); None when there is no reference."""
    if other is not None:
        return quality_report(obj, other, source="compare", path=str(other_path) if other_path else None)
    if object_guess is not None and com_xy is not None:
        ref = reference_on_canvas(object_guess, obj.shape[0], com_xy)
        return quality_report(obj, ref, source="objectGuess", path=None)
    return None
