"""Tests for ptycho_bridge.io.safepickle.opcodes: the dispatch table matches the standard library's."""

from __future__ import annotations

import pickle
import pickletools

import pytest

from ptycho_bridge.errors import PickleDecodeError
from ptycho_bridge.io.safepickle import load_inert
from ptycho_bridge.io.safepickle.layout import MAX_PROTOCOL, OPCODES, REFUSED_OPCODES
from ptycho_bridge.io.safepickle.opcodes import OPS


def test_every_stdlib_opcode_is_run_or_refused() -> None:
    assert {name for name, _ in OPS.values()} == {op.name for op in pickletools.opcodes}
    for code, (name, _) in OPS.items():
        assert OPCODES[name] == code
        assert getattr(pickle, name) == bytes([code])  # the pickle module's own constant agrees


def test_protocol_bound_is_the_stdlib_highest() -> None:
    assert MAX_PROTOCOL == 5 <= pickle.HIGHEST_PROTOCOL
    with pytest.raises(PickleDecodeError, match=r"pickle protocol newer than 5 at byte 0 \(opcode PROTO\)"):
        load_inert(pickle.PROTO + bytes([MAX_PROTOCOL + 1]) + pickle.NONE + pickle.STOP, member="p")


@pytest.mark.parametrize("name", sorted(REFUSED_OPCODES))
def test_refused_opcodes_name_themselves(name: str) -> None:
    data = pickle.PROTO + b"\x05" + getattr(pickle, name) + b"\x00" * 8 + pickle.STOP
    with pytest.raises(PickleDecodeError, match=rf"{REFUSED_OPCODES[name]} at byte 2 \(opcode {name}\)"):
        load_inert(data, member="p")


def test_unknown_opcode_is_named_by_its_byte() -> None:
    unused = next(b for b in range(256) if b not in OPS)
    with pytest.raises(PickleDecodeError, match=rf"unknown opcode at byte 0 \(opcode 0x{unused:02x}\)"):
        load_inert(bytes([unused]) + pickle.STOP, member="p")
