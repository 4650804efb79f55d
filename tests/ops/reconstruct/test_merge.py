"""The gridsize > 1 window merge is bit-equal to the reference (``spec.reassembly.reassemble``, the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.ops.reconstruct.merge import group_merge
from ptycho_bridge.ops.reconstruct.modelinfo import open_model
from ptycho_bridge.spec.reassembly import reassemble
from tests.ops.reconstruct._cases import archive, run


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)  # NaN payloads and signed zeros count too


@pytest.mark.parametrize("B,C,N,P,spread,centre", [
    (32, 4, 64, 78, 6.0, True),     # the pipeline's chunk at gridsize 2
    (5, 4, 64, 74, 60.0, False),    # offsets far beyond the canvas: corners read as zero
    (7, 9, 32, 46, 3.0, True),      # gridsize 3
    (1, 4, 16, 20, 0.0, True),      # one group, zero offsets
])
def test_window_merge_is_bit_equal_to_the_reference(B: int, C: int, N: int, P: int, spread: float,
                                                    centre: bool) -> None:
    rng = np.random.default_rng(B * 100 + C)
    z = (rng.normal(size=(B, C, N, N)) + 1j * rng.normal(size=(B, C, N, N))).astype(np.complex64)
    z.real[0, 0, N // 2, N // 3] = np.nan
    z.imag[0, 1, 2, 3] = np.inf
    z.real[-1, -1, 1, 1] = -0.0
    pos = rng.uniform(-spread, spread, (B, 1, 2, C)).astype(np.float32)
    pos[0, 0, 0, 0] = 0.5  # exact half-pixel and whole-pixel offsets (weights 0.5 and 0)
    pos[0, 0, 1, -1] = -2.0
    got = group_merge(z, pos, N=N, padded_size=P, object_big=True, centre=centre)
    ref = reassemble(z, pos, N=N, padded_size=P, object_big=True, allow_large_batch=True, centre=centre)
    assert got.shape == ref.shape == (B, N, N, 1) and got.dtype == ref.dtype
    np.testing.assert_array_equal(_bits(got), _bits(ref))


def test_offsets_whose_float32_floor_jumps_inside_the_window() -> None:
    """float32 x + (3 - 1e-6) rounds up to x + 3 for large x but not for small x: the floor jumps by 2 inside
    the window, so that patch's corner indices are not one run and take the gather path."""
    from ptycho_bridge.ops.reconstruct.merge import window_merge

    rng = np.random.default_rng(5)
    z = (rng.normal(size=(2, 4, 64, 64)) + 1j * rng.normal(size=(2, 4, 64, 64))).astype(np.complex64)
    pos = np.full((2, 1, 2, 4), -1e-7, np.float32)
    pos[1] = 3.0 - 1e-6
    ref = reassemble(z, pos, N=64, padded_size=78, allow_large_batch=True, centre=False)
    got = group_merge(z, pos, N=64, padded_size=78, object_big=True, centre=False)
    np.testing.assert_array_equal(_bits(got), _bits(ref))
    flat = pos[:, 0].transpose(0, 2, 1).reshape(-1, 2)
    np.testing.assert_array_equal(_bits(window_merge(z, flat, N=64, pad=7)), _bits(ref))


def test_pipeline_gridsize2_chunks_are_the_reference_merge() -> None:
    r, chunks = run("tf_N64_gs2_n15", "onnx")
    info = open_model(archive("tf_N64_gs2_n15"))
    for c in chunks:
        pos = r.local_offsets[c["start"]:c["stop"]].transpose(0, 2, 1)[:, None].astype(np.float32)
        ref = reassemble(c["raw"], pos, N=64, padded_size=info.padded_size, allow_large_batch=True,
                         centre=info.reassembly_centring)
        np.testing.assert_array_equal(_bits(c["merged"]), _bits(ref))
