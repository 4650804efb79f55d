"""Write pickles of plain data, byte by byte, so that what we emit can only ever hold data.

Why: legacy members (``manifest.dill``, ``params.dill``, torch's ``data.pkl``) are pickles, and the
loaders on the other side (upstream's ``dill.load``, ``torch.load(weights_only=True)``) accept only
what they expect. :class:`PickleWriter` emits protocol-2 opcodes directly (opcode bytes from the
standard library's :mod:`pickle` constants), so the only globals that can appear are the ones a
subclass writes on purpose (:class:`converters.pytorch.torchzip.TorchPickleWriter` adds torch tensors);
:func:`plain_pickle` checks a standard protocol-4 pickle for any global or call before returning it.
The readers of these bytes are in this package's inert interpreter, never ``pickle.load``.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
from typing import Any, Mapping, Sequence

from ptycho_bridge.lazy import numpy as np

# Opcodes that import or call: a plain-data pickle holds none of them.
CALL_OPCODES = ("GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "INST", "OBJ")
_SMALL_TUPLES = (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)


class PickleWriter:
    """Protocol-2 pickle opcodes for plain data.

    Supports dict, OrderedDict (as ``collections.OrderedDict()`` plus ``SETITEMS``, as torch writes
    it), list, tuple, str, int, float, bool, None and numpy scalars. numpy arrays go to
    :meth:`save_array`, which subclasses override (the base refuses them). Globals are memoised
    (``BINPUT``/``BINGET``) as torch does. One writer writes one pickle (:meth:`dumps` once).
    """

    #: What the output is, for the refusal message of an unsupported value.
    target = "a pickle (plain data only)"

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.memo: dict[tuple[str, str], int] = {}

    def dumps(self, obj: Any) -> bytes:
        """The whole pickle of ``obj``: ``PROTO 2``, the value, ``STOP``."""
        self.out.write(pickle.PROTO + b"\x02")
        self.save(obj)
        self.out.write(pickle.STOP)
        return self.out.getvalue()

    # -- opcodes (public so that subclasses can compose them) ----------------------------------------
    def write(self, *opcodes: bytes) -> None:
        """Raw opcode bytes (``pickle.MARK``, ``pickle.REDUCE`` …)."""
        for op in opcodes:
            self.out.write(op)

    def global_(self, module: str, name: str) -> None:
        """Push ``module.name`` (``GLOBAL``), memoised: the second use is a ``BINGET``."""
        key = (module, name)
        if key in self.memo:
            index = self.memo[key]
            self.out.write(pickle.BINGET + bytes([index]) if index < 256 else pickle.LONG_BINGET + struct.pack("<I", index))
            return
        self.out.write(pickle.GLOBAL + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")
        index = len(self.memo)
        self.memo[key] = index
        self.out.write(pickle.BINPUT + bytes([index]) if index < 256 else pickle.LONG_BINPUT + struct.pack("<I", index))

    def int_(self, v: int) -> None:
        """The shortest integer opcode for ``v`` (``BININT1``/``BININT2``/``BININT``/``LONG1``)."""
        if 0 <= v < 256:
            self.out.write(pickle.BININT1 + bytes([v]))
        elif 0 <= v < 65536:
            self.out.write(pickle.BININT2 + struct.pack("<H", v))
        elif -(2**31) <= v < 2**31:
            self.out.write(pickle.BININT + struct.pack("<i", v))
        else:
            raw = v.to_bytes((v.bit_length() >> 3) + 1, "little", signed=True)
            if len(raw) > 255:
                raise ValueError(f"integer {v} is too large to serialise")
            self.out.write(pickle.LONG1 + bytes([len(raw)]) + raw)

    def str_(self, v: str) -> None:
        raw = v.encode("utf-8")
        self.out.write(pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw)

    def tuple_(self, items: Sequence[Any]) -> None:
        if not items:
            self.out.write(pickle.EMPTY_TUPLE)
            return
        if len(items) <= 3:
            for item in items:
                self.save(item)
            self.out.write(_SMALL_TUPLES[len(items) - 1])
            return
        self.out.write(pickle.MARK)
        for item in items:
            self.save(item)
        self.out.write(pickle.TUPLE)

    def setitems(self, mapping: Mapping[Any, Any]) -> None:
        """``MARK k v k v … SETITEMS`` onto the dict on the stack (nothing for an empty mapping)."""
        if mapping:
            self.out.write(pickle.MARK)
            for k, v in mapping.items():
                self.save(k)
                self.save(v)
            self.out.write(pickle.SETITEMS)

    def save_array(self, arr: np.ndarray) -> None:
        """Write a numpy array; the base writer holds plain data only and refuses it."""
        self.refuse(arr)

    def refuse(self, obj: Any) -> None:
        raise TypeError(f"cannot serialise a {type(obj).__name__} into {self.target}")

    def save(self, obj: Any) -> None:
        """Write any supported value (see the class docstring); anything else is a :class:`TypeError`."""
        if obj is None:
            self.out.write(pickle.NONE)
        elif obj is True or isinstance(obj, np.bool_) and bool(obj):
            self.out.write(pickle.NEWTRUE)
        elif obj is False or isinstance(obj, np.bool_):
            self.out.write(pickle.NEWFALSE)
        elif isinstance(obj, (int, np.integer)):
            self.int_(int(obj))
        elif isinstance(obj, (float, np.floating)):
            self.out.write(pickle.BINFLOAT + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            self.str_(obj)
        elif isinstance(obj, np.ndarray):
            self.save_array(obj)
        elif isinstance(obj, tuple):
            self.tuple_(obj)
        elif isinstance(obj, list):
            self.out.write(pickle.EMPTY_LIST)
            if obj:
                self.out.write(pickle.MARK)
                for item in obj:
                    self.save(item)
                self.out.write(pickle.APPENDS)
        elif isinstance(obj, collections.OrderedDict):
            self.global_("collections", "OrderedDict")
            self.out.write(pickle.EMPTY_TUPLE + pickle.REDUCE)
            self.setitems(obj)
        elif isinstance(obj, dict):
            self.out.write(pickle.EMPTY_DICT)
            self.setitems(obj)
        else:
            self.refuse(obj)


def plain_pickle(obj: Any) -> bytes:
    """A protocol-4 pickle of plain data (what dill writes for dicts of primitives): no globals, no calls.

    Raises :class:`TypeError` when ``obj`` would need any of :data:`CALL_OPCODES`.
    """
    data = pickle.dumps(obj, protocol=4)
    for op, _arg, _pos in pickletools.genops(data):
        if op.name in CALL_OPCODES:
            raise TypeError(f"legacy pickle members must hold plain data only (found {op.name})")
    return data


__all__ = ["CALL_OPCODES", "PickleWriter", "plain_pickle"]
