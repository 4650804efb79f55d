"""The PyTorch engine behind the one engine protocol (:mod:`ptycho_bridge.ops.engines`).

Why a separate, light module: the registry reads ``NAME``/``REQUIRES``/``refusals`` without importing
torch; torch is imported only when :func:`build` runs (the module itself is
:mod:`converters.pytorch.network`). Thread setup lives here, with the framework.
"""

from __future__ import annotations

from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.spec import expressible
from ptycho_bridge.spec.expressible import Refusal
from ptycho_bridge.spec.network import NetworkSpec

NAME = "torch"
REQUIRES = ("torch",)
DESCRIPTION = "PyTorch eager module (converters/pytorch/network.py)"


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
    """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → complex64 ``[B, Cout, N, N]``."""
    from converters.pytorch.network import run as run_module

    return run_module(handle, x_norm)
