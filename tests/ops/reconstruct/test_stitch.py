"""The streaming stitch equals a direct full-canvas bilinear warp, and the canvas bound holds."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.errors import FormatError, OptionError
from ptycho_bridge.ops.reconstruct.stitch import Stitcher, plan_canvas, reassemble_position
from tests.ops.reconstruct._cases import TOL, golden, need_fixtures, rel


def full_canvas_warp(z: np.ndarray, off: np.ndarray, M: int) -> np.ndarray:
    plan = plan_canvas(off, M)
    P, pad, N = plan.size, plan.pad, z.shape[1]
    adj = (off.astype(np.float32) - plan.com).astype(np.float32)
    lo = N // 2 - M // 2
    S = np.zeros((P, P), np.complex128)
    count = np.zeros((P, P))
    r_, c_ = np.arange(P, dtype=np.float32)[:, None], np.arange(P, dtype=np.float32)[None, :]
    for k in range(len(z)):
        img = np.zeros((P, P), np.complex64)
        img[pad:pad + M, pad:pad + M] = z[k, lo:lo + M, lo:lo + M]
        ones = np.zeros((P, P), np.float32)
        ones[pad:pad + M, pad:pad + M] = 1
        sx, sy = (c_ - adj[k, 0]).astype(np.float32), (r_ - adj[k, 1]).astype(np.float32)
        x0, y0 = np.floor(sx), np.floor(sy)
        wx, wy = sx - x0, sy - y0
        for dy, dx, w in ((0, 0, (1 - wx) * (1 - wy)), (0, 1, wx * (1 - wy)), (1, 0, (1 - wx) * wy), (1, 1, wx * wy)):
            xi, yi = (x0 + dx).astype(int), (y0 + dy).astype(int)
            ok = (xi >= 0) & (xi < P) & (yi >= 0) & (yi < P)
            xi, yi = np.clip(xi, 0, P - 1), np.clip(yi, 0, P - 1)
            S += np.where(ok, w * img[yi, xi], 0)
            count += np.where(ok, w * ones[yi, xi], 0)
    return (S / (count + 1e-9)).astype(np.complex64)


def test_local_windows_equal_the_full_canvas_warp() -> None:
    rng = np.random.default_rng(0)
    off = rng.uniform(0, 150, (30, 2))
    z = (rng.standard_normal((30, 64, 64)) + 1j * rng.standard_normal((30, 64, 64))).astype(np.complex64)
    assert rel(reassemble_position(z, off, 20, chunk=7), full_canvas_warp(z, off, 20)) < 1e-6


@pytest.mark.parametrize("case", ["tf_N64_gs1", "tf_N64_gs2_n15", "torch_N64_gs1"])
def test_golden_patches_stitch_to_the_golden_object(case: str) -> None:
    need_fixtures()
    p = golden(case, "patches")
    assert rel(reassemble_position(p["obj_tensor_full"], p["global_offsets"]), golden(case, "stitched")["object"][..., 0]) <= TOL


def test_canvas_bound_checked_before_allocating() -> None:
    off = np.array([[0.0, 0.0], [40000.0, 0.0]])
    with pytest.raises(FormatError, match="max-canvas"):
        plan_canvas(off)
    with pytest.raises(FormatError, match="max-canvas 100"):
        plan_canvas(np.array([[0.0, 0.0], [100.0, 0.0]]), max_canvas=100)
    with pytest.raises(OptionError, match="--crop"):
        plan_canvas(off, crop=7)
    plan = plan_canvas(np.array([[0.0, 0.0], [10.0, 3.0]]))
    assert plan.size == 20 + 2 * plan.pad and plan.pad % 2 == 0
    with pytest.raises(OptionError, match="--crop"):
        Stitcher(plan_canvas(off[:1], crop=40), 32)


def test_windowed_stitcher_result_is_the_full_canvas_one() -> None:
    """A Stitcher kept to ``window_bounds`` gives the full canvas from ``result()``: the same bits, 0 outside."""
    from ptycho_bridge.ops.reconstruct.stitch import window_bounds

    rng = np.random.default_rng(3)
    off = rng.uniform(0, 150, (30, 2))
    z = (rng.standard_normal((30, 64, 64)) + 1j * rng.standard_normal((30, 64, 64))).astype(np.complex64)
    plan = plan_canvas(off, 20)
    full = Stitcher(plan, 64)
    full.add(z[:6], off[:6])
    bounds = window_bounds(plan, off[:6])
    assert bounds != (0, plan.size, 0, plan.size)  # a real window, smaller than the canvas
    win = Stitcher(plan, 64, bounds=bounds)
    win.add(z[:6], off[:6])
    for rows in (1, 5, 1024):
        got = win.result(rows)
        assert got.shape == (plan.size, plan.size) and np.array_equal(got, full.result(rows))
    r0, r1, c0, c1 = bounds
    outside = np.ones(got.shape, bool)
    outside[r0:r1, c0:c1] = False
    assert not np.any(got[outside])
