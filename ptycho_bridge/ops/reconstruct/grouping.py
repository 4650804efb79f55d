"""Upstream TF inference's subsampling and grouping, replayed exactly (numpy legacy RNG + scipy cKDTree).

Upstream (``scripts/inference/inference.py`` -> ``load_data`` -> ``_run_tf_inference_and_reconstruct``):

1. optional subsample (``--n_subsample S --subsample_seed s``): only when ``S < M``;
   ``np.random.seed(s)`` (global legacy RNG; unseeded upstream = nondeterministic, here a fresh seed is
   drawn and reported) then ``choice(arange(M), S, replace=False)``, **sorted**.
2. ``nsamples`` (groups): default ``M'`` for gridsize 1, ``max(1, M' // C)`` for C > 1 (``M'`` after
   subsampling); explicit ``n_groups`` overrides.
3. ``np.random.seed(45)``; seeds: ``choice(arange(M'), nsamples, replace=False)`` (unsorted) when
   ``nsamples < M'``, else ``arange(M')`` (no RNG draw). gridsize 1: ``groups = seeds[:, None]`` (int64).
   C > 1: ``cKDTree(column_stack([x, y])).query(coords[seeds], k=min(K+1, M'))`` with K = 4; per seed in
   order: neighbours = row[1:K+1] (the first hit, normally the point itself, is dropped),
   ``choice(neighbours, C, replace=False)`` (int32). Fallbacks as upstream when fewer than C exist.
   ``nsamples > M'``: gridsize 1 is capped to M'; C > 1 raises (upstream needs oversampling there).
4. offsets (TF layouts, float64): ``coords_nn (B,1,2,C)`` with axis 2 = [x, y];
   ``coords_offsets = mean(coords_nn, axis=3)[..., None]`` -> ``(B,1,2,1)`` = global offsets (group mean);
   ``coords_relative = -(coords_nn - coords_offsets)`` -> ``(B,1,2,C)`` = local offsets (sign -1!).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import OptionError

UPSTREAM_GROUP_SEED = 45
UPSTREAM_K = 4
LOCAL_OFFSET_SIGN = -1.0


@dataclass
class Grouping:
    """Groups and offsets; indices in ``groups`` are indices into the *file* (subsample mapped back)."""

    groups: np.ndarray  # (B, C) file indices
    groups_local: np.ndarray  # (B, C) indices into the subsample (what upstream records as nn_indices)
    sample_indices: np.ndarray  # (M',) file indices kept by the subsample (sorted)
    coords_nn: np.ndarray  # (B, 1, 2, C) float64
    coords_offsets: np.ndarray  # (B, 1, 2, 1) float64 global offsets (TF layout)
    coords_relative: np.ndarray  # (B, 1, 2, C) float64 local offsets (TF layout)
    subsample_seed: int | None
    nsamples_requested: int
    notes: list[str]

    @property
    def global_offsets(self) -> np.ndarray:
        """``(B, 2)`` [x, y] float64."""
        return self.coords_offsets[:, 0, :, 0]

    @property
    def local_offsets(self) -> np.ndarray:
        """``(B, C, 2)`` [x, y] float64."""
        return np.ascontiguousarray(self.coords_relative[:, 0].transpose(0, 2, 1))


def subsample_indices(M: int, n_subsample: int | None, seed: int | None) -> tuple[np.ndarray, int | None]:
    """Upstream's ``load_data`` subsample: sorted ``choice(arange(M), S, False)`` when ``S < M``."""
    if n_subsample is None or n_subsample >= M:
        return np.arange(M), seed
    if n_subsample < 1:
        raise OptionError(f"must be >= 1, got {n_subsample}", option="--subsample")
    if seed is None:
        seed = secrets.randbelow(2**32)  # upstream: unseeded global RNG; we draw one and report it
    rs = np.random.RandomState(seed)
    return np.sort(rs.choice(np.arange(M), size=n_subsample, replace=False)), seed


def default_nsamples(M: int, C: int) -> int:
    """Upstream ``main``: gridsize 1 -> all patterns; C > 1 -> ``max(1, M // C)`` groups."""
    return M if C == 1 else max(1, M // C)


def group_indices(x: np.ndarray, y: np.ndarray, C: int, nsamples: int, K: int = UPSTREAM_K,
                  seed: int = UPSTREAM_GROUP_SEED) -> tuple[np.ndarray, list[str]]:
    """``RawData._generate_groups_efficiently`` replayed on a private ``RandomState(seed)``."""
    n = len(x)
    notes: list[str] = []
    if nsamples < 1:
        raise OptionError(f"must be >= 1, got {nsamples}", option="--n-groups")
    if n < C:
        raise OptionError(f"only {n} patterns but groups of {C} requested", option="--n-groups")
    if K < C:
        raise OptionError(f"K={K} must be >= C={C}", option="K")
    if nsamples > n:
        if C > 1:
            raise OptionError(f"{nsamples} groups requested from {n} patterns; gridsize>1 allows at most "
                             f"{n} (upstream needs its oversampling mode for more)", option="--n-groups")
        notes.append(f"n_groups {nsamples} capped to {n} patterns (upstream caps too)")
        nsamples = n
    rs = np.random.RandomState(seed)
    seeds = rs.choice(np.arange(n), size=nsamples, replace=False) if nsamples < n else np.arange(n)
    if C == 1:
        return seeds.reshape(-1, 1).astype(np.int64), notes
    from scipy.spatial import cKDTree  # the reconstruct extra, imported when grouping runs

    coords = np.column_stack([x, y])
    _, nbr = cKDTree(coords).query(coords[seeds], k=min(K + 1, n))
    nbr = np.atleast_2d(nbr)
    groups = np.zeros((nsamples, C), dtype=np.int32)
    for i in range(nsamples):
        row = nbr[i]
        neighbours = row[1:K + 1] if len(row) > K else row[:K]
        available = np.concatenate([[seeds[i]], neighbours]) if len(neighbours) < C else neighbours
        groups[i] = rs.choice(available, size=C, replace=len(available) < C)
    return groups, notes


def relative_coords(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords_nn, coords_offsets, coords_relative) exactly as upstream computes them (float64)."""
    coords_nn = np.transpose(np.array([x[groups], y[groups]]), [1, 0, 2])[:, None, :, :]
    coords_offsets = np.mean(coords_nn, axis=3)[..., None]
    coords_relative = LOCAL_OFFSET_SIGN * (coords_nn - coords_offsets)
    return coords_nn, coords_offsets, coords_relative


def make_groups(x: np.ndarray, y: np.ndarray, C: int, *, n_groups: int | None = None,
                subsample: int | None = None, subsample_seed: int | None = None) -> Grouping:
    """Subsample (optional), group and compute offsets — upstream's TF inference path."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep, seed_used = subsample_indices(len(x), subsample, subsample_seed)
    xs, ys = x[keep], y[keep]
    nsamples = default_nsamples(len(keep), C) if n_groups is None else int(n_groups)
    local, notes = group_indices(xs, ys, C, nsamples)
    coords_nn, offsets, relative = relative_coords(xs, ys, local)
    if subsample is not None and subsample_seed is None and seed_used is not None:
        notes.append(f"subsample without a seed: drew seed {seed_used} (upstream would be nondeterministic)")
    return Grouping(groups=keep[local], groups_local=local, sample_indices=keep, coords_nn=coords_nn,
                    coords_offsets=offsets, coords_relative=relative, subsample_seed=seed_used,
                    nsamples_requested=nsamples, notes=notes)
