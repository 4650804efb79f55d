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


def test_non_numeric_dtype_is_refused_unless_the_caller_takes_the_dtype_check() -> None:
    from ptycho_bridge.errors import FormatError, UnsafeArchiveError
    from ptycho_bridge.io.h5 import check_dataset, non_numeric_reason

    def make(f: h5py.File) -> None:
        f["title"] = "scan 1"
        f.create_dataset("ext", shape=(4,), dtype="S8", external=[("/etc/passwd", 0, 32)])

    f = _file_with(make)
    with pytest.raises(FormatError) as info:
        check_dataset(f["title"], member="m")
    assert info.value.reason == non_numeric_reason(f["title"]) == "HDF5 dataset /title has non-numeric dtype object"
    check_dataset(f["title"], member="m", numeric=False)  # the dtype is the caller's to judge
    with pytest.raises(UnsafeArchiveError, match="external storage"):  # storage is refused either way
        check_dataset(f["ext"], member="m", numeric=False)
