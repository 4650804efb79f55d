"""ptycho_bridge.io.h5: datasets are bounded by declared size and by the bytes actually stored, before any read."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from ptycho_bridge.errors import ArchiveLimitError, CorruptArchiveError
from ptycho_bridge.io.h5 import check_dataset_size


def _file_with(make) -> h5py.File:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        make(f)
    return h5py.File(io.BytesIO(buf.getvalue()), "r")


def test_written_dataset_passes_with_its_size() -> None:
    f = _file_with(lambda f: f.create_dataset("x", data=np.ones((8, 8), np.float32)))
    assert check_dataset_size(f["x"], member="m") == 256


def test_declared_but_unwritten_chunks_are_refused() -> None:
    f = _file_with(lambda f: f.create_dataset("x", shape=(4000, 4000), dtype="c8", chunks=(512, 512)))
    with pytest.raises(CorruptArchiveError, match="unwritten or missing data"):
        check_dataset_size(f["x"], member="m")


def test_declared_size_over_the_limit_is_refused_before_anything_else() -> None:
    f = _file_with(lambda f: f.create_dataset("x", shape=(17678, 17678), dtype="c8", chunks=(1024, 1024)))
    with pytest.raises(ArchiveLimitError, match="declares 2500093472 bytes"):
        check_dataset_size(f["x"], member="m")
