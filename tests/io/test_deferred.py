"""Deferred arrays (issue 16): a deferred decode checks everything a plain decode checks, reports the
same shapes and dtypes, and builds exactly the same arrays when asked."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from converters.pytorch.torchzip import read_torch
from ptycho_bridge.formats.base import read_pickle
from ptycho_bridge.io.deferred import DeferredArray, is_array, materialise_tree
from ptycho_bridge.io.safepickle import decode, load_inert
from ptycho_bridge.io.safezip import SafeZip
from tests._support import FIXTURES_DIR

needs_fixtures = pytest.mark.skipif(not FIXTURES_DIR.is_dir(), reason=f"fixtures not found at {FIXTURES_DIR}")


@needs_fixtures
@pytest.mark.parametrize("case", ["torch_N64_gs1", "torch_N64_gs2"])
def test_deferred_torch_state_dict_builds_the_same_tensors(case: str) -> None:
    with SafeZip(FIXTURES_DIR / case / "wts.h5.zip", label="wts.h5.zip") as zf:
        eager = read_torch(zf, "diffraction_to_obj/model.pth")
        deferred = read_torch(zf, "diffraction_to_obj/model.pth", defer_arrays=True)
    assert list(eager) == list(deferred) and len(eager) > 50
    for key, arr in eager.items():
        lazy = deferred[key]
        assert isinstance(lazy, DeferredArray), key
        assert (lazy.shape, lazy.dtype, lazy.nbytes) == (arr.shape, str(arr.dtype), arr.nbytes), key
        built = lazy.materialise()
        assert built.dtype == arr.dtype and built.flags.c_contiguous and np.array_equal(built, arr), key
        assert lazy.materialise() is built  # built once


@needs_fixtures
def test_deferred_probe_in_params_dill_is_the_same_array_and_keyed_by_its_bytes() -> None:
    with SafeZip(FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip", label="wts.h5.zip") as zf:
        eager = read_pickle(zf, "diffraction_to_obj/params.dill")["probe"]
        probe = read_pickle(zf, "diffraction_to_obj/params.dill", defer_arrays=True)["probe"]
        other = read_pickle(zf, "autoencoder/params.dill", defer_arrays=True)["probe"]
    assert isinstance(probe, DeferredArray) and (probe.shape, probe.dtype) == ((64, 64, 1), "complex64")
    assert probe.key is not None and probe.key == other.key  # both models pickled the same probe
    assert np.array_equal(probe.materialise(), eager) and probe.materialise().dtype == eager.dtype


def test_a_dtype_the_deferred_decoder_cannot_name_is_built_at_once() -> None:
    """Big-endian data (numpy names it '>f4') is not in the plain table: decoded eagerly, still correct."""
    for arr in (np.arange(6, dtype=">f4").reshape(2, 3), np.asfortranarray(np.arange(6, dtype="<i8").reshape(2, 3))):
        got = decode(load_inert(pickle.dumps(arr, protocol=2), member="x"), member="x", defer_arrays=True)
        got = materialise_tree(got)
        assert isinstance(got, np.ndarray) and got.dtype == arr.dtype and np.array_equal(got, arr)


class _ShortArray:
    """Pickles as numpy's ``_frombuffer(12 bytes, float32, shape (4,), 'C')``: 4 bytes too few."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        from numpy._core.numeric import _frombuffer  # the global numpy >= 2 pickles name

        return _frombuffer, (b"\0" * 12, np.dtype("<f4"), (4,), "C")


def test_deferred_decode_still_checks_the_byte_count_now() -> None:
    data = pickle.dumps(_ShortArray(), protocol=4)
    for defer in (False, True):
        with pytest.raises(Exception, match="array data holds 12 bytes"):
            decode(load_inert(data, member="p.dill"), member="p.dill", defer_arrays=defer)


def test_materialise_tree_keeps_trees_without_arrays_and_builds_the_rest() -> None:
    plain = {"a": [1, (2.0, "x")], "b": None}
    assert materialise_tree(plain) is plain
    lazy = DeferredArray((2,), "float32", lambda: np.ones(2, dtype=np.float32))
    tree = {"k": [lazy, 3], "t": (lazy,)}
    out = materialise_tree(tree)
    assert out is not tree and isinstance(out["k"][0], np.ndarray) and out["t"][0] is out["k"][0]
    assert is_array(lazy) and is_array(out["k"][0]) and not is_array([1.0])


@needs_fixtures
@pytest.mark.parametrize("case", ["tf_N64_gs1", "torch_N64_gs1"])
def test_open_lazy_arrays_reads_metadata_and_builds_the_same_values_on_use(case: str) -> None:
    import ptycho_bridge as pb

    path = FIXTURES_DIR / case / "wts.h5.zip"
    lazy, eager = pb.open(path, lazy_arrays=True), pb.open(path)
    for name, entry in lazy.models.items():
        if entry.sentinel:  # upstream's placeholder model holds no tensors
            continue
        assert not entry.tensors.loaded  # type: ignore[attr-defined]
        assert entry.tensor_info == eager.models[name].tensor_info
    if eager.probe is None:
        assert lazy.probe is None
    else:
        assert isinstance(lazy.probe, DeferredArray)
        assert (lazy.probe.shape, lazy.probe.dtype) == (eager.probe.shape, str(eager.probe.dtype))
        assert np.array_equal(lazy.probe.materialise(), eager.probe)
    primary = lazy.primary.tensors
    for tname, arr in eager.primary.tensors.items():
        assert np.array_equal(primary[tname], arr) and primary[tname].dtype == arr.dtype, tname
