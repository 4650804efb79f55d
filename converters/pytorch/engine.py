"""The PyTorch engine behind the one engine protocol (:mod:`ptycho_bridge.ops.engines`).

Why a separate, light module: the registry reads ``NAME``/``REQUIRES``/``refusals`` without importing
torch; torch is imported only when :func:`build` runs (the module itself is
:mod:`converters.pytorch.network`). Thread setup and the inference speed settings live here, with the
framework: the forward runs under ``torch.inference_mode`` (no autograd bookkeeping at all). Channels-last
memory (oneDNN's native NHWC convolutions) was 1.3-1.9x faster on 2 shared cores but is **not used**: its
convolutions moved a Keras-saved network's output 1.48e-5·max|ref| from the Keras reference
(tests/api/test_save.py, bound 1e-5·max) — parity first (docs/performance.md). ``torch.jit`` freezing
(+ ``optimize_for_inference``) was ~10 % faster but took 6 s to build; ``torch.compile`` needs a
C++ toolchain at run time — neither is used.
"""

from __future__ import annotations

from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.spec import expressible
from ptycho_bridge.spec.expressible import Refusal
from ptycho_bridge.spec.network import NetworkSpec

NAME = "torch"
REQUIRES = ("torch",)
DESCRIPTION = "PyTorch eager module (converters/pytorch/network.py), inference mode"


def refusals(spec: NetworkSpec) -> list[Refusal]:
    """Every reason this engine cannot run ``spec`` (empty: it can)."""
    return expressible.refusals(spec, "engine:torch")


def build(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None = None) -> Any:
    """A strict-loaded ``nn.Module`` in eval mode (``threads`` sets torch's intra-op pool)."""
    import torch

    from converters.pytorch.network import build_module

    if threads is not None:
        torch.set_num_threads(int(threads))
    return build_module(spec, tensors)


def run(handle: Any, x_norm: np.ndarray) -> np.ndarray:
    """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → complex64 ``[B, Cout, N, N]`` (inference mode)."""
    from converters.pytorch.network import run as run_module

    return run_module(handle, x_norm)
