"""ptycho_bridge/io/safepickle/writer.py: what PickleWriter and plain_pickle emit is plain data,
read back identically by the standard loader (on our own output only) and by our inert reader."""

from __future__ import annotations

import collections
import pickle
import pickletools
from typing import Any

import numpy as np
import pytest

from ptycho_bridge.io.safepickle import decode, load_inert
from ptycho_bridge.io.safepickle.writer import CALL_OPCODES, PickleWriter, plain_pickle

PLAIN = {"s": "é", "n": None, "t": True, "f": False, "i": [0, 255, 256, 65536, -1, 2**31, -(2**40), 2**80],
         "x": 2.5e-300, "tup": (1, (2, 3), (4, 5, 6, 7)), "empty": {}, "lst": [], "e": ()}


def _ops(data: bytes) -> list[str]:
    return [op.name for op, _arg, _pos in pickletools.genops(data)]


def test_plain_data_round_trips_without_globals() -> None:
    data = PickleWriter().dumps(PLAIN)
    assert data[:2] == pickle.PROTO + b"\x02" and data[-1:] == pickle.STOP
    assert not set(_ops(data)) & set(CALL_OPCODES)
    assert pickle.loads(data) == PLAIN  # our own bytes: safe to load with the standard loader
    assert decode(load_inert(data, member="t"), member="t") == PLAIN


def test_numpy_scalars_become_python_values() -> None:
    obj = [np.float32(1.5), np.int64(-7), np.bool_(True), np.bool_(False)]
    assert pickle.loads(PickleWriter().dumps(obj)) == [1.5, -7, True, False]


def test_ordered_dict_is_one_memoised_global() -> None:
    obj = collections.OrderedDict(a=collections.OrderedDict(b=1), c=collections.OrderedDict())
    data = PickleWriter().dumps(obj)
    assert pickle.loads(data) == obj
    assert data.count(b"ccollections\nOrderedDict\n") == 1 and "BINGET" in _ops(data)


@pytest.mark.parametrize("bad", [np.zeros(2, np.float32), object(), b"bytes", {1, 2}])
def test_base_writer_refuses_arrays_and_objects(bad: Any) -> None:
    with pytest.raises(TypeError, match="plain data only"):
        PickleWriter().dumps({"x": bad})


def test_too_large_integer_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        PickleWriter().dumps(2**2100)


def test_plain_pickle_is_protocol_4_plain_data() -> None:
    data = plain_pickle({"models": ["a", "b"], "version": "2.0-pytorch", "n": None})
    assert data == pickle.dumps({"models": ["a", "b"], "version": "2.0-pytorch", "n": None}, protocol=4)


@pytest.mark.parametrize("bad", [np.zeros(2), collections.OrderedDict(a=1), object()])
def test_plain_pickle_refuses_anything_that_needs_a_global(bad: Any) -> None:
    with pytest.raises(TypeError, match="plain data only"):
        plain_pickle({"x": bad})
