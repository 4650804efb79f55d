"""The torch and ONNX engines honour outer_mask=False and a 1-channel amp head (upstream torchapi-devel)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.spec.network import expected_tensors, torch_spec


def _random_tensors(spec, seed: int = 1) -> dict:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 0.5 / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 1)).astype(np.float32)
            for k, s in expected_tensors(spec).items()}


def test_gridsize2_unmasked_one_channel_amp_torch_equals_onnx() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from converters.onnx.engine import build as onnx_build
    from converters.onnx.engine import run as onnx_run
    from converters.pytorch.engine import build as torch_build
    from converters.pytorch.engine import run as torch_run

    spec = torch_spec(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=True, amp_activation="sigmoid",
                      c_outer=4, amp_channels=1, outer_mask=False)
    tensors = _random_tensors(spec)
    x = np.random.default_rng(2).random((2, 4, 64, 64), dtype=np.float32)
    a = torch_run(torch_build(spec, tensors, 2), x)
    b = onnx_run(onnx_build(spec, tensors, 2), x)
    assert a.shape == (2, 4, 64, 64) and np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    # the mask matters: the masked network differs on the centre
    masked = torch_run(torch_build(torch_spec(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=True,
                                              amp_activation="sigmoid", c_outer=4, amp_channels=1), tensors, 2), x)
    assert np.abs(masked - a)[..., 16:48, 16:48].max() > 1e-3
    assert np.array_equal(masked[..., :8, :], a[..., :8, :])
