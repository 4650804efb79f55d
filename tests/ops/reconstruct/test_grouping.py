"""Grouping and offsets equal upstream's ``nn_indices`` / ``grouped.npz`` bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.errors import OptionError
from ptycho_bridge.ops.reconstruct.dataset import open_dataset
from ptycho_bridge.ops.reconstruct.grouping import default_nsamples, make_groups, subsample_indices
from tests.ops.reconstruct._cases import CASES, DATASET, golden, need_fixtures


@pytest.mark.parametrize("case", list(CASES))
def test_groups_and_offsets_equal_upstream(case: str) -> None:
    need_fixtures()
    C = 4 if "gs2" in case else 1
    ds = open_dataset(str(DATASET), 64)
    try:
        g = make_groups(ds.x, ds.y, C, **CASES[case][1])
    finally:
        ds.close()
    want = golden(case, "grouped")
    assert np.array_equal(g.groups_local, want["nn_indices"]) and g.groups_local.dtype == want["nn_indices"].dtype
    for key, ours in (("coords_offsets", g.coords_offsets), ("coords_relative", g.coords_relative),
                      ("model_in_positions", g.coords_relative), ("coords_nn", g.coords_nn)):
        assert np.array_equal(ours, want[key]) and ours.dtype == want[key].dtype, key
    assert np.array_equal(g.global_offsets, want["coords_offsets"][:, 0, :, 0])
    assert np.array_equal(g.local_offsets, want["coords_relative"][:, 0].transpose(0, 2, 1))


def test_defaults_and_subsample() -> None:
    assert default_nsamples(100, 1) == 100 and default_nsamples(100, 4) == 25 and default_nsamples(3, 4) == 1
    idx, seed = subsample_indices(50, 10, 3)
    assert seed == 3 and np.array_equal(idx, np.sort(np.random.RandomState(3).choice(np.arange(50), 10, False)))
    idx, seed = subsample_indices(50, None, None)
    assert np.array_equal(idx, np.arange(50)) and seed is None
    _, drawn = subsample_indices(50, 10, None)
    assert isinstance(drawn, int)  # unseeded upstream is nondeterministic; we draw and report a seed


def test_bad_group_requests() -> None:
    x = np.arange(10.0)
    with pytest.raises(OptionError, match="--n-groups"):
        make_groups(x, x, 4, n_groups=11)
    with pytest.raises(OptionError, match="--n-groups"):
        make_groups(x[:3], x[:3], 4)
    g = make_groups(x, x, 1, n_groups=20)  # gridsize 1 caps, as upstream does
    assert g.groups.shape == (10, 1) and g.notes
