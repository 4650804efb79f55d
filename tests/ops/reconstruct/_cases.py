"""Shared reconstruction fixtures: the scan, the cases and a cached run per (case, engine)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pytest

from ptycho_bridge.ops.engines import EngineUnavailable
from ptycho_bridge.ops.reconstruct.pipeline import ReconstructionResult, reconstruct
from tests._support import FIXTURES_DIR, RECONSTRUCT_DIR

DATASET = RECONSTRUCT_DIR / "dataset_N64.npz"
TOL = 1e-5
CASES: dict[str, tuple[str, dict[str, Any]]] = {  # case folder -> (archive fixture, reconstruct arguments)
    "tf_N64_gs1": ("tf_N64_gs1", {}),
    "tf_N64_gs2_n15": ("tf_N64_gs2", {"subsample": 100, "n_groups": 15}),
    "tf_N64_gs2_upstream_collapse": ("tf_N64_gs2", {}),
    "torch_N64_gs1": ("torch_N64_gs1", {}),
    "torch_N64_gs2_n15": ("torch_N64_gs2", {"subsample": 100, "n_groups": 15}),
}
STITCHED = tuple(c for c in CASES if not c.endswith("collapse"))


def need_fixtures() -> None:
    if not DATASET.is_file() or not FIXTURES_DIR.is_dir():
        pytest.skip(f"reconstruction fixtures not found at {RECONSTRUCT_DIR} / {FIXTURES_DIR}")


def archive(case: str) -> str:
    return str(FIXTURES_DIR / CASES[case][0] / "wts.h5.zip")


def golden(case: str, name: str) -> dict[str, np.ndarray]:
    with np.load(RECONSTRUCT_DIR / case / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def rel(a: np.ndarray, g: np.ndarray) -> float:
    return float(np.abs(a.astype(np.complex128) - g.astype(np.complex128)).max() / np.abs(g).max())


@lru_cache(maxsize=None)
def run(case: str, engine: str, batch_size: int = 7) -> tuple[ReconstructionResult, tuple[dict[str, Any], ...]]:
    """One reconstruction with the per-chunk intermediates (cached: several tests read it)."""
    need_fixtures()
    chunks: list[dict[str, Any]] = []
    try:
        r = reconstruct(archive(case), DATASET, engine, batch_size=batch_size, inspect=chunks.append,
                        **CASES[case][1])
    except EngineUnavailable as exc:
        pytest.skip(f"engine {engine} unavailable: {exc.reason}")
    return r, tuple(chunks)


def cat(chunks: tuple[dict[str, Any], ...], key: str) -> np.ndarray:
    return np.concatenate([c[key] for c in chunks])
