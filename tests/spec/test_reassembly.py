"""numpy reassembly reference (ptycho_bridge.spec.reassembly): properties that follow from upstream's rules.

The expected values here are built independently (np.roll of padded canvases, closed forms), not
from the function under test. Agreement with TF's own goldens is tested in
tests/test_converters_tensorflow.py, where a real network produces the patches.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.spec import reassembly as R

EPS = np.float32(0.001)


def _random_obj(rng: np.random.Generator, B: int, C: int, N: int) -> np.ndarray:
    return (rng.standard_normal((B, C, N, N)) + 1j * rng.standard_normal((B, C, N, N))).astype(np.complex64)


def _tf_positions(offsets: np.ndarray) -> np.ndarray:
    """[B, C, 2] (dx, dy) → TF layout [B, 1, 2, C]."""
    return np.ascontiguousarray(np.asarray(offsets, dtype=np.float32).transpose(0, 2, 1)[:, None])


def _divide_parts(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.empty(num.shape, dtype=np.complex64)
    out.real = num.real.astype(np.float32) / den
    out.imag = num.imag.astype(np.float32) / den
    return out


def test_centre_border_masks() -> None:
    centre, border = R.centre_border_masks(64)
    assert centre.shape == border.shape == (64, 64)
    assert centre.dtype == bool and border.dtype == bool
    assert centre.sum() == 32 * 32
    assert centre[16, 16] and centre[47, 47] and not centre[15, 16] and not centre[48, 47]
    assert np.array_equal(border, ~centre)


@pytest.mark.parametrize("N,padded", [(64, 74), (128, 138)])
def test_zero_offsets_gridsize1_divide_by_mask_plus_eps_exactly(N: int, padded: int) -> None:
    rng = np.random.default_rng(0)
    obj = _random_obj(rng, 3, 1, N)
    out = R.reassemble(obj, np.zeros((3, 1, 2, 1), np.float32), N=N, padded_size=padded)
    assert out.shape == (3, N, N, 1) and out.dtype == np.complex64
    denom = (R.centre_mask(N) + EPS).astype(np.float32)
    assert np.array_equal(out[..., 0], _divide_parts(obj[:, 0], denom))


def test_identical_offsets_are_removed_by_batch_mean_centring() -> None:
    rng = np.random.default_rng(1)
    obj = _random_obj(rng, 4, 1, 64)
    same = np.full((4, 1, 2, 1), 0.0, np.float32)
    same[:, 0, 0, 0], same[:, 0, 1, 0] = 1.75, -2.25
    zero = np.zeros_like(same)
    assert np.array_equal(R.reassemble(obj, same, N=64, padded_size=74), R.reassemble(obj, zero, N=64, padded_size=74))


def test_object_big_false_is_identity() -> None:
    rng = np.random.default_rng(2)
    obj = _random_obj(rng, 2, 1, 64)
    pos = rng.standard_normal((2, 1, 2, 1)).astype(np.float32)
    out = R.reassemble(obj, pos, N=64, padded_size=74, object_big=False)
    assert np.array_equal(out, obj.transpose(0, 2, 3, 1))
    assert np.array_equal(R.trimmed_to_canonical(out), obj)


def _rolled_expectation(obj: np.ndarray, offsets: np.ndarray, N: int, padded: int) -> np.ndarray:
    """Integer offsets: content of patch k moves by −off_k; merge, divide by moved masks + 0.001."""
    pad = (padded - N) // 2
    B, C = obj.shape[:2]
    mask = np.pad(R.centre_mask(N), pad)
    out = np.empty((B, N, N), np.complex64)
    for b in range(B):
        num_re = np.zeros_like(mask)
        num_im = np.zeros_like(mask)
        den = np.zeros_like(mask)
        for c in range(C):
            dx, dy = (int(v) for v in offsets[b, c])
            def move(a: np.ndarray) -> np.ndarray:
                return np.roll(a, shift=(-dy, -dx), axis=(0, 1))
            num_re += move(np.pad(obj[b, c].real, pad))
            num_im += move(np.pad(obj[b, c].imag, pad))
            den += move(mask)
        den = den + EPS
        out[b].real = (num_re / den)[pad : pad + N, pad : pad + N]
        out[b].imag = (num_im / den)[pad : pad + N, pad : pad + N]
    return out[..., None]


def test_integer_shift_moves_content_by_exactly_that_many_pixels() -> None:
    rng = np.random.default_rng(3)
    N, padded = 64, 74
    obj = _random_obj(rng, 2, 1, N)
    offsets = np.array([[[2, -3]], [[-2, 3]]], np.float32)  # batch mean already zero
    out = R.reassemble(obj, _tf_positions(offsets), N=N, padded_size=padded)
    expected = _rolled_expectation(obj, offsets, N, padded)
    assert np.array_equal(out, expected)
    # direction: with dx=+2 the output at column x shows the input's column x+2
    pad = (padded - N) // 2
    x = np.arange(N)
    canvas = np.pad(obj[0, 0].real, pad)[pad : pad + N, pad + 2 : pad + 2 + N]
    den = (np.pad(R.centre_mask(N), pad)[pad - 3 : pad - 3 + N, pad + 2 : pad + 2 + N] + EPS)
    row = 20
    assert np.array_equal(out[0, row + 3, x[:-2], 0].real, (canvas[row, :-2] / den[row + 3, :-2]).astype(np.float32))


def test_gridsize2_merges_patches_of_a_group() -> None:
    rng = np.random.default_rng(4)
    N, padded = 64, 78
    obj = _random_obj(rng, 2, 4, N)
    offsets = np.array(
        [[[-2, -2], [2, -2], [-2, 2], [2, 2]], [[-4, 0], [4, 0], [0, -4], [0, 4]]], np.float32
    )  # mean over all 8 patches is zero
    out = R.reassemble(obj, _tf_positions(offsets), N=N, padded_size=padded)
    expected = _rolled_expectation(obj, offsets, N, padded)
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=2e-6 * np.abs(expected).max())


def test_half_pixel_shift_interpolates_linearly() -> None:
    # bilinear sampling reproduces a linear ramp exactly at a half-pixel offset (interior pixels)
    ramp = np.tile(np.arange(16, dtype=np.float32), (16, 1))[None]
    out = R.translate_bilinear(ramp, np.array([[0.5, 0.0]], np.float32))
    assert np.array_equal(out[0, :, :-1], ramp[0, :, :-1] + np.float32(0.5))
    # the last column samples outside the canvas: only its in-range corner contributes
    assert np.array_equal(out[0, :, -1], np.full(16, 0.5 * 15, np.float32))


def test_batch_collapse_path_is_refused() -> None:
    obj = np.zeros((16, 4, 64, 64), np.complex64)
    with pytest.raises(ValueError, match="64"):
        R.reassemble(obj, np.zeros((16, 1, 2, 4), np.float32), N=64, padded_size=78)


def test_layout_helpers() -> None:
    rng = np.random.default_rng(5)
    torch_pos = rng.standard_normal((3, 4, 1, 2)).astype(np.float32)
    tf_pos = R.torch_positions_to_tf(torch_pos)
    assert tf_pos.shape == (3, 1, 2, 4)
    assert tf_pos[1, 0, 0, 2] == torch_pos[1, 2, 0, 0] and tf_pos[1, 0, 1, 2] == torch_pos[1, 2, 0, 1]
    flat = R.tf_positions_to_flat(tf_pos)
    assert flat.shape == (12, 2)
    assert np.array_equal(flat[1 * 4 + 2], torch_pos[1, 2, 0])


def test_compare_regions_reports_each_region() -> None:
    rng = np.random.default_rng(6)
    ref = _random_obj(rng, 2, 1, 64).transpose(0, 2, 3, 1).copy()
    ref[:, :16] *= 1000  # a large border, as TF's ×1000 output has
    got = ref.copy()
    got[0, 2, 3, 0] += 0.5  # border pixel
    res = R.compare_regions(got, ref)
    assert res["centre"]["max_abs_err"] == 0.0
    assert res["border"]["max_abs_err"] == pytest.approx(0.5, rel=1e-6)
    assert res["border"]["scaled_err"] == pytest.approx(0.5 / res["border"]["max_ref"], rel=1e-6)
    assert res["centre"]["max_ref"] < res["border"]["max_ref"]
    same = R.compare_regions(R.trimmed_to_canonical(got), R.trimmed_to_canonical(ref), layout="nchw")
    assert same["border"]["max_abs_err"] == res["border"]["max_abs_err"]


def test_centre_false_keeps_each_offset() -> None:
    """The SavedModel era's reassembly: no batch-mean centring, so a common shift is not removed."""
    rng = np.random.default_rng(3)
    N, P = 16, 20
    obj = (rng.random((3, 1, N, N)) + 1j * rng.random((3, 1, N, N))).astype(np.complex64)
    pos = rng.uniform(-0.5, 0.5, (3, 1, 2, 1)).astype(np.float32)
    centred = pos - pos.mean(axis=0, keepdims=True, dtype=np.float32)
    # centre=False on pre-centred offsets equals centre=True on the raw ones (same float32 steps)
    a = R.reassemble(obj, pos, N=N, padded_size=P)
    b = R.reassemble(obj, R.centre_offsets(R.tf_positions_to_flat(pos)).reshape(3, 1, 2, 1), N=N, padded_size=P,
                     centre=False)
    assert np.array_equal(a, b)
    # and without centring each sample's result is independent of the rest of the batch
    one = R.reassemble(obj[:1], pos[:1], N=N, padded_size=P, centre=False)
    assert np.array_equal(one, R.reassemble(obj, pos, N=N, padded_size=P, centre=False)[:1])
    assert not np.allclose(R.reassemble(obj, centred, N=N, padded_size=P, centre=False),
                           R.reassemble(obj, pos, N=N, padded_size=P, centre=False))
