"""Safe pickle layer: read a pickle stream as inert data, importing nothing and calling nothing.

Why: every legacy member (``*.dill``, torch ``data.pkl``) is a pickle, and the standard loaders run
code from the file (``os.system`` is one ``REDUCE`` away) and import TensorFlow/PyTorch. This module
is its own opcode interpreter:

* :func:`load_inert` turns the stream into an *inert tree*: plain containers and scalars, plus
  :class:`Global` for every global reference, :class:`Reduce` / :class:`Instance` records for every
  call the pickle asks for (with ``BUILD`` state and ``SETITEM``/``APPEND`` items attached), and
  :class:`PersistentRef` (or the caller's ``persistent_load`` result) for persistent ids. Every size,
  count and depth is bounded before anything is allocated.
* :func:`decode` recognises the few shapes we need (numpy arrays, TF eager tensors, torch tensors,
  ``OrderedDict``, paths, dataclass-like records) and builds plain data from them with numpy alone.
  Everything else becomes :class:`Opaque` and :func:`find_opaque` reports it by name.

The only exceptions that leave this module are :class:`~ptycho_bridge.errors.ArchiveError` subclasses.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import math
import re
import reprlib
import struct
import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ptycho_bridge.errors import ArchiveError, ArchiveLimitError, PickleDecodeError

GiB = 1024**3


@dataclass(frozen=True)
class PickleLimits:
    """Bounds for one pickle stream (and for decoding it); documented in ``docs/security.md``."""

    max_depth: int = 200  # nesting of containers/records; guards recursion in hash(), decode and callers
    max_memo: int = 1_000_000
    max_stack: int = 1_000_000  # values + open MARKs
    max_ops: int = 50_000_000
    max_array_bytes: int = 8 * GiB  # total bytes decode() may materialise as ndarrays
    max_key_items: int = 10_000  # items inside one dict key / set item (hashing a shared-tuple DAG is exponential)


DEFAULT_PICKLE_LIMITS = PickleLimits()


# --------------------------------------------------------------------------------------------------
# The inert tree
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Global:
    """A global reference (``GLOBAL``/``STACK_GLOBAL``/``INST``): a name, never imported."""

    module: str
    name: str

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False, kw_only=True, repr=False)
class _Call:
    """What the pickle did to the result of a call: ``BUILD`` state, ``SETITEM(S)`` pairs, ``APPEND(S)``.

    Reprs of inert nodes are shallow on purpose: a pickle can share sub-trees so that a full repr
    would be exponentially long.
    """

    state: Any = None
    items: list[tuple[Any, Any]] = field(default_factory=list)
    appends: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_name_of(self)}, {len(self.args)} args)"  # type: ignore[attr-defined]


@dataclass(eq=False, repr=False)
class Reduce(_Call):
    """``REDUCE``: the pickle wanted ``func(*args)``; we only remember that it asked."""

    func: Any
    args: tuple


@dataclass(eq=False, repr=False)
class Instance(_Call):
    """``NEWOBJ``/``NEWOBJ_EX``/``OBJ``/``INST``: ``cls.__new__(cls, *args, **kwargs)``, never run."""

    cls: Any
    args: tuple
    kwargs: dict | None = None


@dataclass(eq=False)
class Build:
    """``BUILD`` on something that is not a call record (a plain dict/list, a global): kept, not applied."""

    target: Any
    state: Any

    def __repr__(self) -> str:
        return f"Build({_name_of(self.target)})"


@dataclass(eq=False)
class PersistentRef:
    """A persistent id nobody resolved (no ``persistent_load`` given)."""

    pid: Any

    def __repr__(self) -> str:
        return f"PersistentRef({short_repr(self.pid)})"


@dataclass(eq=False)
class TensorStorage:
    """A flat torch storage handed out by a ``persistent_load`` (see :mod:`ptycho_bridge.torchzip`).

    ``raw`` is the little-endian bytes of the storage; ``dtype`` a torch dtype name from
    :data:`TORCH_DTYPES` (``float32``, ``bfloat16`` …).
    """

    key: str
    raw: bytes
    dtype: str
    _views: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def as_array(self, dtype: str, *, member: str) -> np.ndarray:
        """The storage as a read-only 1-D array of ``dtype`` (bfloat16 widened exactly to float32)."""
        if dtype not in self._views:
            np_dtype, itemsize = _torch_dtype(dtype, member)
            if len(self.raw) % itemsize:
                raise PickleDecodeError(
                    f"storage {self.key} holds {len(self.raw)} bytes, not a multiple of {dtype} size {itemsize}",
                    member=member,
                )
            if dtype == "bfloat16":
                bits = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(self.raw, dtype=np_dtype)
            self._views[dtype] = arr
        return self._views[dtype]


# torch dtype name -> (numpy dtype, bytes per element in the file)
TORCH_DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("<f4", 4), "float64": ("<f8", 8), "float16": ("<f2", 2), "bfloat16": ("<f4", 2),
    "int64": ("<i8", 8), "int32": ("<i4", 4), "int16": ("<i2", 2), "int8": ("i1", 1),
    "uint8": ("u1", 1), "uint16": ("<u2", 2), "uint32": ("<u4", 4), "uint64": ("<u8", 8),
    "bool": ("?", 1), "complex64": ("<c8", 8), "complex128": ("<c16", 16),
}
_TORCH_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
    "short": "int16", "cfloat": "complex64", "cdouble": "complex128",
}


def _torch_dtype(name: str, member: str) -> tuple[np.dtype, int]:
    try:
        np_name, itemsize = TORCH_DTYPES[name]
    except KeyError:
        raise PickleDecodeError(f"unsupported torch dtype {name!r}", member=member) from None
    return np.dtype(np_name), itemsize


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """A bounded repr for error messages (plain ``repr`` of a hostile tree can be exponentially long)."""
    return _REPR.repr(value)


def _check_hashable(value: Any, limits: PickleLimits, member: str) -> None:
    """Refuse dict keys / set items that are expensive to hash.

    ``hash()`` of a tuple is not cached, so 60 levels of ``(x, x)`` built with memo GETs would take
    2**60 steps: at most ``max_key_items`` values are allowed inside one key. Integers beyond 64 bits
    are refused because ``hash(n) == hash(n + k * (2**61 - 1))`` lets a pickle flood one dict slot.
    """
    count = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, int) and not -(2**63) <= item < 2**64:
            raise PickleDecodeError("integer dict key or set item beyond 64 bits refused (hash flooding)",
                                    member=member)
        if isinstance(item, (tuple, frozenset)):
            count += len(item)
            if count > limits.max_key_items:
                raise ArchiveLimitError(
                    f"dict key or set item holds more than {limits.max_key_items} values", member=member
                )
            todo.extend(item)


# --------------------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------------------
_CONTAINERS = (list, tuple, dict, set, frozenset, _Call, Build, PersistentRef)


class _Machine:
    """One run over one stream. A flat value stack plus a list of MARK positions, as CPython does."""

    def __init__(
        self,
        data: bytes,
        member: str,
        persistent_load: Callable[[Any], Any] | None,
        limits: PickleLimits,
        on_global: Callable[[Global], None] | None = None,
    ) -> None:
        self.data = bytes(data)
        self.end = len(self.data)
        self.pos = 0
        self.op_pos = 0
        self.op_name = "?"
        self.member = member
        self.persistent_load = persistent_load
        self.limits = limits
        self.on_global = on_global
        self.proto = 0
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        # Depth of every container made so far, keyed by id; `_pin` keeps them alive so ids stay unique.
        self._depth: dict[int, int] = {}
        self._pin: list[Any] = []

    # -- errors and raw reads ----------------------------------------------------------------------
    def fail(self, message: str) -> PickleDecodeError:
        return PickleDecodeError(f"{message} at byte {self.op_pos} (opcode {self.op_name})", member=self.member)

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise self.fail(f"truncated stream: needs {n} bytes, {self.end - self.pos} remain")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> int | float:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> bytes:
        nl = self.data.find(b"\n", self.pos)
        if nl < 0:
            raise self.fail("truncated stream: missing newline")
        text = self.data[self.pos:nl]
        self.pos = nl + 1
        return text

    # -- stack, depth, memo ------------------------------------------------------------------------
    def push(self, value: Any) -> None:
        if len(self.stack) + len(self.marks) >= self.limits.max_stack:
            raise ArchiveLimitError(f"pickle stack exceeds {self.limits.max_stack} entries", member=self.member)
        self.stack.append(value)

    def pop(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise self.fail("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise self.fail("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise self.fail("no MARK on the stack")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def depth(self, value: Any) -> int:
        return self._depth.get(id(value), 0) if isinstance(value, _CONTAINERS) else 0

    def made(self, value: Any, children: Iterable[Any]) -> Any:
        """Record a new container whose depth is one more than its deepest child."""
        self._pin.append(value)
        self._depth[id(value)] = 0
        return self.grew(value, children)

    def grew(self, value: Any, children: Iterable[Any]) -> Any:
        deepest = max((self.depth(c) for c in children), default=0) + 1
        if deepest > self._depth[id(value)]:
            if deepest > self.limits.max_depth:
                raise ArchiveLimitError(f"pickle nested deeper than {self.limits.max_depth} levels", member=self.member)
            self._depth[id(value)] = deepest
        return value

    def put(self, index: int) -> None:
        if index < 0:
            raise self.fail("negative memo index")
        if index not in self.memo and len(self.memo) >= self.limits.max_memo:
            raise ArchiveLimitError(f"pickle memo exceeds {self.limits.max_memo} entries", member=self.member)
        self.memo[index] = self.top()

    def get(self, index: int) -> None:
        try:
            self.push(self.memo[index])
        except KeyError:
            raise self.fail(f"memo entry {index} was never stored") from None

    # -- helpers shared by several opcodes ----------------------------------------------------------
    def global_ref(self, module: Any, name: Any) -> Global:
        if not isinstance(module, str) or not isinstance(name, str):
            raise self.fail("global module and name must be strings")
        if self.proto < 3:  # Python 2 names, mapped as pickle's fix_imports does (a table lookup only)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        ref = Global(module, name)
        if self.on_global is not None:
            self.on_global(ref)
        return ref

    def text(self, raw: bytes) -> str | bytes:
        """Protocol 0-2 8-bit strings: ASCII becomes str (CPython's default), anything else stays bytes."""
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return raw

    def add_pairs(self, target: Any, flat: list[Any]) -> None:
        if len(flat) % 2:
            raise self.fail("odd number of items for SETITEMS")
        pairs = list(zip(flat[0::2], flat[1::2]))
        if isinstance(target, dict):
            for key, value in pairs:
                _check_hashable(key, self.limits, self.member)
                target[key] = value
        elif isinstance(target, _Call):
            target.items.extend(pairs)
        else:
            raise self.fail(f"SETITEM on {type(target).__name__}")
        self.grew(target, flat)

    def add_items(self, target: Any, items: list[Any], kind: str) -> None:
        if isinstance(target, list) and kind == "append":
            target.extend(items)
        elif isinstance(target, set) and kind == "add":
            for item in items:
                _check_hashable(item, self.limits, self.member)
            target.update(items)
        elif isinstance(target, _Call):
            target.appends.extend(items)
        else:
            raise self.fail(f"{kind.upper()} on {type(target).__name__}")
        self.grew(target, items)

    def persistent(self, pid: Any) -> None:
        if self.persistent_load is None:
            self.push(self.made(PersistentRef(pid), (pid,)))
            return
        self.push(self.persistent_load(pid))

    def build(self) -> None:
        state = self.pop()
        target = self.top()
        if isinstance(target, _Call):
            if target.state is None:
                target.state = state
            elif isinstance(target.state, dict) and isinstance(state, dict):
                target.state.update(state)
            else:
                raise self.fail("BUILD applied twice to one object")
            self.grew(target, (state,))
        else:
            self.stack[-1] = self.made(Build(target, state), (target, state))

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> Any:
        ops = 0
        data = self.data
        while True:
            if self.pos >= self.end:
                self.op_pos, self.op_name = self.pos, "<end>"
                raise self.fail("truncated stream: no STOP opcode")
            ops += 1
            if ops > self.limits.max_ops:
                raise ArchiveLimitError(f"pickle runs more than {self.limits.max_ops} opcodes", member=self.member)
            self.op_pos = self.pos
            code = data[self.pos]
            self.pos += 1
            handler = _OPS.get(code)
            if handler is None:
                self.op_name = f"0x{code:02x}"
                raise self.fail("unknown opcode")
            self.op_name = handler.__name__[4:]
            if handler is _op_STOP:
                if self.marks or len(self.stack) != 1:
                    raise self.fail("STOP with an unbalanced stack")
                return self.stack[0]
            handler(self)


def _decimal(m: _Machine, raw: bytes) -> int:
    if not re.fullmatch(rb"\s*[+-]?\d{1,4300}\s*", raw):
        raise m.fail(f"bad integer literal {raw[:40]!r}")
    return int(raw)


# Each handler is named _op_<OPCODE NAME>; the table maps the opcode byte to it.
def _op_PROTO(m: _Machine) -> None:
    m.proto = m.take(1)[0]
    if m.proto > 5:
        raise m.fail("pickle protocol newer than 5")


def _op_FRAME(m: _Machine) -> None:
    if m.unpack("<Q") > m.end - m.pos:
        raise m.fail("frame longer than the remaining stream")


def _op_STOP(m: _Machine) -> None:  # handled in run()
    pass


def _op_NONE(m: _Machine) -> None: m.push(None)
def _op_NEWTRUE(m: _Machine) -> None: m.push(True)
def _op_NEWFALSE(m: _Machine) -> None: m.push(False)


def _op_INT(m: _Machine) -> None:
    raw = m.line()
    m.push(False if raw == b"00" else True if raw == b"01" else _decimal(m, raw))


def _op_BININT(m: _Machine) -> None: m.push(m.unpack("<i"))
def _op_BININT1(m: _Machine) -> None: m.push(m.take(1)[0])
def _op_BININT2(m: _Machine) -> None: m.push(m.unpack("<H"))


def _op_LONG(m: _Machine) -> None:
    raw = m.line()
    m.push(_decimal(m, raw[:-1] if raw.endswith(b"L") else raw))


def _op_LONG1(m: _Machine) -> None: m.push(int.from_bytes(m.take(m.take(1)[0]), "little", signed=True))
def _op_LONG4(m: _Machine) -> None: m.push(int.from_bytes(m.take(int(m.unpack("<i"))), "little", signed=True))
def _op_FLOAT(m: _Machine) -> None: m.push(float(m.line()))
def _op_BINFLOAT(m: _Machine) -> None: m.push(m.unpack(">d"))


def _op_STRING(m: _Machine) -> None:
    raw = m.line().rstrip(b"\r")
    if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
        raise m.fail("STRING argument is not quoted")
    m.push(m.text(codecs.escape_decode(raw[1:-1])[0]))


def _op_BINSTRING(m: _Machine) -> None: m.push(m.text(m.take(int(m.unpack("<i")))))
def _op_SHORT_BINSTRING(m: _Machine) -> None: m.push(m.text(m.take(m.take(1)[0])))
def _op_UNICODE(m: _Machine) -> None: m.push(m.line().decode("raw-unicode-escape"))
def _op_BINUNICODE(m: _Machine) -> None: m.push(m.take(int(m.unpack("<I"))).decode("utf-8", "surrogatepass"))
def _op_SHORT_BINUNICODE(m: _Machine) -> None: m.push(m.take(m.take(1)[0]).decode("utf-8", "surrogatepass"))
def _op_BINUNICODE8(m: _Machine) -> None: m.push(m.take(int(m.unpack("<Q"))).decode("utf-8", "surrogatepass"))
def _op_BINBYTES(m: _Machine) -> None: m.push(m.take(int(m.unpack("<I"))))
def _op_SHORT_BINBYTES(m: _Machine) -> None: m.push(m.take(m.take(1)[0]))
def _op_BINBYTES8(m: _Machine) -> None: m.push(m.take(int(m.unpack("<Q"))))
def _op_BYTEARRAY8(m: _Machine) -> None: m.push(bytearray(m.take(int(m.unpack("<Q")))))


def _op_MARK(m: _Machine) -> None:
    if len(m.stack) + len(m.marks) >= m.limits.max_stack:
        raise ArchiveLimitError(f"pickle stack exceeds {m.limits.max_stack} entries", member=m.member)
    m.marks.append(len(m.stack))


def _op_POP(m: _Machine) -> None:
    if len(m.stack) > (m.marks[-1] if m.marks else 0):
        m.stack.pop()
    else:
        m.pop_mark()


def _op_POP_MARK(m: _Machine) -> None: m.pop_mark()
def _op_DUP(m: _Machine) -> None: m.push(m.top())
def _op_EMPTY_TUPLE(m: _Machine) -> None: m.push(())


def _op_TUPLE(m: _Machine) -> None:
    items = tuple(m.pop_mark())
    m.push(m.made(items, items) if items else items)


def _tuple_n(n: int) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        items = tuple(reversed([m.pop() for _ in range(n)]))
        m.push(m.made(items, items))
    handler.__name__ = f"_op_TUPLE{n}"
    return handler


def _op_EMPTY_LIST(m: _Machine) -> None: m.push(m.made([], ()))
def _op_EMPTY_DICT(m: _Machine) -> None: m.push(m.made({}, ()))
def _op_EMPTY_SET(m: _Machine) -> None: m.push(m.made(set(), ()))


def _op_LIST(m: _Machine) -> None:
    items = m.pop_mark()
    m.push(m.made(items, items))


def _op_DICT(m: _Machine) -> None:
    flat = m.pop_mark()
    target = m.made({}, ())
    m.add_pairs(target, flat)
    m.push(target)


def _op_FROZENSET(m: _Machine) -> None:
    items = m.pop_mark()
    for item in items:
        _check_hashable(item, m.limits, m.member)
    value = frozenset(items)
    m.push(m.made(value, items))


def _op_APPEND(m: _Machine) -> None:
    item = m.pop()
    m.add_items(m.top(), [item], "append")


def _op_APPENDS(m: _Machine) -> None:
    items = m.pop_mark()
    m.add_items(m.top(), items, "append")


def _op_ADDITEMS(m: _Machine) -> None:
    items = m.pop_mark()
    m.add_items(m.top(), items, "add")


def _op_SETITEM(m: _Machine) -> None:
    value = m.pop()
    key = m.pop()
    m.add_pairs(m.top(), [key, value])


def _op_SETITEMS(m: _Machine) -> None:
    flat = m.pop_mark()
    m.add_pairs(m.top(), flat)


def _op_GET(m: _Machine) -> None: m.get(_decimal(m, m.line()))
def _op_BINGET(m: _Machine) -> None: m.get(m.take(1)[0])
def _op_LONG_BINGET(m: _Machine) -> None: m.get(int(m.unpack("<I")))
def _op_PUT(m: _Machine) -> None: m.put(_decimal(m, m.line()))
def _op_BINPUT(m: _Machine) -> None: m.put(m.take(1)[0])
def _op_LONG_BINPUT(m: _Machine) -> None: m.put(int(m.unpack("<I")))
def _op_MEMOIZE(m: _Machine) -> None: m.put(len(m.memo))


def _op_GLOBAL(m: _Machine) -> None:
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    m.push(m.global_ref(module, name))


def _op_STACK_GLOBAL(m: _Machine) -> None:
    name = m.pop()
    module = m.pop()
    m.push(m.global_ref(module, name))


def _op_REDUCE(m: _Machine) -> None:
    args = m.pop()
    func = m.pop()
    if not isinstance(args, tuple):
        raise m.fail("REDUCE arguments are not a tuple")
    m.push(m.made(Reduce(func, args), (func, args)))


def _op_BUILD(m: _Machine) -> None: m.build()


def _op_NEWOBJ(m: _Machine) -> None:
    args = m.pop()
    cls = m.pop()
    if not isinstance(args, tuple):
        raise m.fail("NEWOBJ arguments are not a tuple")
    m.push(m.made(Instance(cls, args), (cls, args)))


def _op_NEWOBJ_EX(m: _Machine) -> None:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise m.fail("NEWOBJ_EX arguments are not (tuple, dict)")
    m.push(m.made(Instance(cls, args, kwargs), (cls, args, kwargs)))


def _op_OBJ(m: _Machine) -> None:
    items = m.pop_mark()
    if not items:
        raise m.fail("OBJ without a class")
    args = tuple(items[1:])
    m.push(m.made(Instance(items[0], args), (items[0], m.made(args, args))))


def _op_INST(m: _Machine) -> None:
    cls = m.global_ref(m.line().decode("utf-8"), m.line().decode("utf-8"))
    args = tuple(m.pop_mark())
    m.push(m.made(Instance(cls, args), (m.made(args, args),)))


def _op_PERSID(m: _Machine) -> None: m.persistent(m.line().decode("ascii"))
def _op_BINPERSID(m: _Machine) -> None: m.persistent(m.pop())


def _refuse(why: str) -> Callable[[_Machine], None]:
    def handler(m: _Machine) -> None:
        raise m.fail(why)
    return handler


_OPCODE_BYTES = {
    "PROTO": 0x80, "FRAME": 0x95, "STOP": 0x2E, "NONE": 0x4E, "NEWTRUE": 0x88, "NEWFALSE": 0x89,
    "INT": 0x49, "BININT": 0x4A, "BININT1": 0x4B, "BININT2": 0x4D, "LONG": 0x4C, "LONG1": 0x8A, "LONG4": 0x8B,
    "FLOAT": 0x46, "BINFLOAT": 0x47, "STRING": 0x53, "BINSTRING": 0x54, "SHORT_BINSTRING": 0x55,
    "UNICODE": 0x56, "BINUNICODE": 0x58, "SHORT_BINUNICODE": 0x8C, "BINUNICODE8": 0x8D,
    "BINBYTES": 0x42, "SHORT_BINBYTES": 0x43, "BINBYTES8": 0x8E, "BYTEARRAY8": 0x96,
    "MARK": 0x28, "POP": 0x30, "POP_MARK": 0x31, "DUP": 0x32,
    "EMPTY_TUPLE": 0x29, "TUPLE": 0x74, "EMPTY_LIST": 0x5D, "LIST": 0x6C, "APPEND": 0x61, "APPENDS": 0x65,
    "EMPTY_DICT": 0x7D, "DICT": 0x64, "SETITEM": 0x73, "SETITEMS": 0x75,
    "EMPTY_SET": 0x8F, "ADDITEMS": 0x90, "FROZENSET": 0x91,
    "GET": 0x67, "BINGET": 0x68, "LONG_BINGET": 0x6A, "PUT": 0x70, "BINPUT": 0x71, "LONG_BINPUT": 0x72,
    "MEMOIZE": 0x94, "GLOBAL": 0x63, "STACK_GLOBAL": 0x93, "REDUCE": 0x52, "BUILD": 0x62,
    "NEWOBJ": 0x81, "NEWOBJ_EX": 0x92, "OBJ": 0x6F, "INST": 0x69, "PERSID": 0x50, "BINPERSID": 0x51,
}
_OPS: dict[int, Callable[[_Machine], None]] = {code: globals()[f"_op_{name}"] for name, code in _OPCODE_BYTES.items()}
for _n, _code in ((1, 0x85), (2, 0x86), (3, 0x87)):
    _OPS[_code] = _tuple_n(_n)
for _name, _code, _why in (
    ("EXT1", 0x82, "extension registry codes are not supported"),
    ("EXT2", 0x83, "extension registry codes are not supported"),
    ("EXT4", 0x84, "extension registry codes are not supported"),
    ("NEXT_BUFFER", 0x97, "out-of-band buffers are not supported"),
    ("READONLY_BUFFER", 0x98, "out-of-band buffers are not supported"),
):
    _OPS[_code] = _refuse(_why)
    _OPS[_code].__name__ = f"_op_{_name}"


def _children(value: Any) -> Iterator[Any]:
    """The values an inert node points to (for the depth/cycle check)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        yield from value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield item
    elif isinstance(value, _Call):
        yield value.func if isinstance(value, Reduce) else value.cls
        yield value.args
        if isinstance(value, Instance) and value.kwargs:
            yield value.kwargs
        yield value.state
        for key, item in value.items:
            yield key
            yield item
        yield from value.appends
    elif isinstance(value, Build):
        yield value.target
        yield value.state
    elif isinstance(value, PersistentRef):
        yield value.pid


def _check_tree(root: Any, limits: PickleLimits, member: str) -> None:
    """Exact depth bound and cycle check on the finished tree (mutations after nesting can deepen it).

    Iterative and memoised by identity, so shared sub-trees (memo ``GET``) cost nothing extra.
    """
    done: dict[int, int] = {}
    on_path: set[int] = set()
    if not isinstance(root, _CONTAINERS):
        return
    path: list[tuple[Any, Iterator[Any], int]] = [(root, _children(root), 0)]
    on_path.add(id(root))
    while path:
        node, children, deepest = path[-1]
        for child in children:
            if not isinstance(child, _CONTAINERS):
                continue
            if id(child) in done:
                deepest = max(deepest, done[id(child)])
                continue
            if id(child) in on_path:
                raise PickleDecodeError("pickle holds a self-referencing structure", member=member)
            if len(path) >= limits.max_depth:
                raise ArchiveLimitError(f"pickle nested deeper than {limits.max_depth} levels", member=member)
            path[-1] = (node, children, deepest)
            path.append((child, _children(child), 0))
            on_path.add(id(child))
            break
        else:
            path.pop()
            on_path.discard(id(node))
            done[id(node)] = deepest + 1
            if path:
                parent, siblings, best = path[-1]
                path[-1] = (parent, siblings, max(best, deepest + 1))


def _describe(exc: BaseException) -> str:
    """``Type: message`` without calling repr on pickle data (KeyError's message is the key's repr)."""
    if all(isinstance(a, (str, int, float)) for a in exc.args):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return f"{type(exc).__name__}: {short_repr(exc.args)}"


def load_inert(
    data: bytes,
    *,
    member: str,
    persistent_load: Callable[[Any], Any] | None = None,
    limits: PickleLimits = DEFAULT_PICKLE_LIMITS,
) -> Any:
    """Interpret a pickle stream without importing or calling anything; return the inert tree.

    ``persistent_load(pid)`` (optional) maps a decoded persistent id to a value; it is the only
    caller-supplied code that runs. Without it persistent ids become :class:`PersistentRef`.
    """
    machine = _Machine(data, member, persistent_load, limits)
    try:
        root = machine.run()
        _check_tree(root, limits, member)
        return root
    except ArchiveError:
        raise
    except MemoryError:
        raise ArchiveLimitError("out of memory while reading the pickle", member=member) from None
    except RecursionError:
        raise ArchiveLimitError("pickle nested too deeply", member=member) from None
    except Exception as exc:  # noqa: BLE001 - any other failure means a malformed stream
        raise PickleDecodeError(
            f"malformed pickle at byte {machine.op_pos} (opcode {machine.op_name}): {_describe(exc)}",
            member=member,
        ) from None


def globals_in(data: bytes, member: str, *, limits: PickleLimits = DEFAULT_PICKLE_LIMITS) -> list[tuple[str, str]]:
    """Every global the stream references, ``(module, name)`` in first-seen order, for reports.

    Runs the same inert interpreter (so ``STACK_GLOBAL`` names built from memo entries are resolved)
    with persistent ids left unresolved; nothing is imported.
    """
    seen: dict[tuple[str, str], None] = {}
    machine = _Machine(data, member, None, limits, on_global=lambda g: seen.setdefault((g.module, g.name)))
    try:
        machine.run()
    except ArchiveError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PickleDecodeError(
            f"malformed pickle at byte {machine.op_pos} (opcode {machine.op_name}): {_describe(exc)}",
            member=member,
        ) from None
    return list(seen)


# --------------------------------------------------------------------------------------------------
# Decoding the inert tree into plain data
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Record:
    """A dataclass/namespace-like object reduced to its type name and fields (never instantiated)."""

    type_name: str
    fields: dict[str, Any]


@dataclass(eq=False)
class Opaque:
    """A value the decoder does not recognise, kept inert for reports.

    ``kind`` says what the pickle held: ``global`` (a bare reference), ``call`` (REDUCE),
    ``instance`` (NEWOBJ/OBJ/INST), ``build`` (BUILD on a non-object) or ``persistent`` (unresolved
    persistent id); ``raw`` is the inert record itself.
    """

    type_name: str
    kind: str = "global"
    raw: Any = field(repr=False, default=None)


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_PATHS = {
    f"{mod}.{name}": (PureWindowsPath if "Windows" in name else PurePosixPath)
    for mod in ("pathlib", "pathlib._local")
    for name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")
}
_DTYPE_STR = re.compile(r"[biufcSUOVMm][0-9]{0,5}")  # kind letter + item size, as numpy pickles it
_ALLOWED_KINDS = "biufcSU"


def _callee(node: _Call) -> Any:
    return node.func if isinstance(node, Reduce) else node.cls




def _name_of(value: Any) -> str:
    """``module.name`` of a global, or of the callable a call record names; ``<dynamic>`` otherwise."""
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, _Call):
        inner = _callee(value)
        return inner.dotted if isinstance(inner, Global) else "<dynamic>"
    return f"<{type(value).__name__}>"


class _Decoder:
    def __init__(self, member: str, limits: PickleLimits) -> None:
        self.member = member
        self.limits = limits
        self.done: dict[int, Any] = {}
        self.busy: set[int] = set()
        self.spent = 0

    def fail(self, message: str) -> PickleDecodeError:
        return PickleDecodeError(message, member=self.member)

    def spend(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.spent > self.limits.max_array_bytes:
            raise ArchiveLimitError(
                f"decoded arrays exceed {self.limits.max_array_bytes} bytes in total", member=self.member
            )

    # -- generic walk ------------------------------------------------------------------------------
    def decode(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.ndarray, np.generic)):
            return value
        if isinstance(value, bytearray):
            return bytes(value)
        if depth > self.limits.max_depth:
            raise ArchiveLimitError(f"pickle nested deeper than {self.limits.max_depth} levels", member=self.member)
        key = id(value)
        if key in self.done:
            return self.done[key]
        if key in self.busy:
            raise self.fail("pickle holds a self-referencing structure")
        self.busy.add(key)
        try:
            result = self._decode(value, depth + 1)
        finally:
            self.busy.discard(key)
        self.done[key] = result
        return result

    def _decode(self, value: Any, depth: int) -> Any:
        if isinstance(value, list):
            return [self.decode(item, depth) for item in value]
        if isinstance(value, tuple):
            return tuple(self.decode(item, depth) for item in value)
        if isinstance(value, dict):
            return {self.key(k, depth): self.decode(v, depth) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            return type(value)(self.key(item, depth) for item in value)
        if isinstance(value, Global):
            return Opaque(value.dotted, "global", value)
        if isinstance(value, _Call):
            return self.call(value, depth)
        if isinstance(value, TensorStorage):
            self.spend(len(value.raw))
            return np.array(value.as_array(value.dtype, member=self.member))
        if isinstance(value, PersistentRef):
            return Opaque("<persistent id>", "persistent", value)
        if isinstance(value, Build):
            return Opaque(_name_of(value.target), "build", value)
        return value  # something a caller's persistent_load produced; theirs to interpret

    def key(self, value: Any, depth: int) -> Any:
        """Decode something that will be hashed (a dict key, a set item), bounding the hash cost."""
        result = self.decode(value, depth)
        _check_hashable(result, self.limits, self.member)
        return result

    # -- recognised calls --------------------------------------------------------------------------
    def call(self, node: _Call, depth: int) -> Any:
        callee = _callee(node)
        name = callee.dotted if isinstance(callee, Global) else None
        handler = _HANDLERS.get(name) if name else None
        if handler is not None:
            result = handler(self, node, depth)
            if result is not NotImplemented:
                return result
        elif name:
            record = self.record(node, name, depth)
            if record is not None:
                return record
        return Opaque(_name_of(node), "call" if isinstance(node, Reduce) else "instance", node)

    def plain_args(self, node: _Call, depth: int, *, counts: tuple[int, ...] | None) -> tuple | None:
        """Decoded args when the call has no extra items/kwargs and an expected arity, else None."""
        if node.items or node.appends or (isinstance(node, Instance) and node.kwargs):
            return None
        if counts is not None and len(node.args) not in counts:
            return None
        return tuple(self.decode(a, depth) for a in node.args)

    def fields(self, state: Any, depth: int) -> dict[str, Any] | None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            merged: dict = dict(state[0] or {})
            if isinstance(state[1], dict):
                merged.update(state[1])
            state = merged
        if state is None:
            state = {}
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            return None
        return {k: self.decode(v, depth) for k, v in state.items()}

    def record(self, node: _Call, name: str, depth: int) -> Record | None:
        """``NEWOBJ(cls, ())`` + ``BUILD(dict)`` and friends → :class:`Record`; None when not that shape."""
        if node.items or node.appends:
            return None
        if isinstance(node, Instance) and not node.args and not node.kwargs:
            cls_name = name
        elif (
            name == "copyreg._reconstructor"
            and len(node.args) == 3
            and isinstance(node.args[0], Global)
            and isinstance(node.args[1], Global)
            and node.args[1].dotted == "builtins.object"
            and node.args[2] is None
        ):
            cls_name = node.args[0].dotted
        elif name in ("types.SimpleNamespace", "argparse.Namespace") and not node.args:
            cls_name = name
        else:
            return None
        fields = self.fields(node.state, depth)
        return None if fields is None else Record(cls_name, fields)

    # -- numpy -------------------------------------------------------------------------------------
    def dtype(self, value: Any, depth: int) -> np.dtype:
        if isinstance(value, np.dtype):
            return value
        if not (isinstance(value, Reduce) and value.func == Global("numpy", "dtype")):
            raise self.fail(f"expected a numpy dtype, found {_name_of(value)}")
        return self.make_dtype(value, depth)

    def make_dtype(self, node: _Call, depth: int) -> np.dtype:
        args = tuple(self.decode(a, depth) for a in node.args)
        if not args or not isinstance(args[0], str) or not _DTYPE_STR.fullmatch(args[0]):
            raise self.fail(f"unsupported numpy dtype arguments {short_repr(args)}")
        if args[0][0] in "OV":
            raise self.fail(f"numpy dtype {args[0]!r} (object or structured) refused")
        dt = np.dtype(args[0])
        state = self.decode(node.state, depth)
        if state is not None:
            if not isinstance(state, tuple) or len(state) < 8:
                raise self.fail("unsupported numpy dtype state")
            _, endian, subarray, names, fields, elsize = state[:6]
            if subarray is not None or names is not None or fields is not None:
                raise self.fail("structured numpy dtypes are refused")
            if dt.kind in "SU" and isinstance(elsize, int) and elsize > 0 and elsize != dt.itemsize:
                dt = np.dtype(f"{dt.kind}{elsize // (4 if dt.kind == 'U' else 1)}")
            if endian in ("<", ">"):
                dt = dt.newbyteorder(endian)
            elif endian not in ("|", "="):
                raise self.fail(f"bad numpy byte order {short_repr(endian)}")
        if dt.kind not in _ALLOWED_KINDS or dt.hasobject or dt.fields is not None or dt.itemsize == 0:
            raise self.fail(f"numpy dtype {dt.str!r} refused (only bool/int/float/complex/bytes/str)")
        return dt

    def ndarray(self, shape: Any, dt: np.dtype, order: str, raw: Any) -> np.ndarray:
        if isinstance(raw, bytearray):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            raise self.fail(f"array data is {type(raw).__name__}, expected bytes (object arrays are refused)")
        if (
            not isinstance(shape, tuple)
            or len(shape) > 64
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise self.fail(f"bad array shape {short_repr(shape)}")
        count = math.prod(shape)
        if len(raw) != count * dt.itemsize:
            raise self.fail(
                f"array data holds {len(raw)} bytes, shape {shape} of {dt} needs {count * dt.itemsize}"
            )
        self.spend(len(raw))
        flat = np.frombuffer(raw, dtype=dt, count=count) if count else np.empty(0, dtype=dt)
        return np.array(flat.reshape(shape, order=order), copy=True, order=order)

    def array_from_state(self, state: Any, depth: int) -> np.ndarray:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise self.fail("unsupported ndarray state")
        if len(state) == 5:
            state = state[1:]
        shape, dt, fortran, raw = state
        shape = self.decode(shape, depth)
        dt = self.dtype(dt, depth)
        raw = self.decode(raw, depth)
        return self.ndarray(shape, dt, "F" if fortran else "C", raw)

    # -- torch -------------------------------------------------------------------------------------
    def tensor(self, storage: TensorStorage, offset: Any, size: Any, stride: Any, dtype: str, meta: Any) -> Any:
        flat = storage.as_array(dtype, member=self.member)

        def ints(v: Any) -> bool:
            return isinstance(v, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v)

        if not (isinstance(offset, int) and offset >= 0 and ints(size) and ints(stride)
                and len(size) == len(stride) <= 64):
            raise self.fail(f"bad tensor geometry offset={short_repr(offset)} size={short_repr(size)} "
                            f"stride={short_repr(stride)}")
        count = math.prod(size)
        if count == 0:
            return np.empty(size, dtype=flat.dtype)
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if extent > flat.size:
            raise self.fail(
                f"storage smaller than tensor: storage {storage.key} holds {flat.size} {dtype} elements, "
                f"tensor needs {extent} (offset {offset}, size {size}, stride {stride})"
            )
        self.spend(count * flat.itemsize)
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
        )
        out = np.array(view, copy=True, order="C")
        for flag, on in (meta or {}).items():
            if not on:
                continue
            if flag == "conj":
                out = np.conj(out)
            elif flag == "neg":
                out = np.negative(out)
            else:
                raise self.fail(f"unsupported tensor metadata {short_repr(flag)}")
        return out


def _h_ordered_dict(d: _Decoder, node: _Call, depth: int) -> Any:
    if isinstance(node, Instance) and node.kwargs:
        return NotImplemented
    if len(node.args) > 1 or node.appends or not (node.state is None or isinstance(node.state, dict)):
        return NotImplemented
    pairs: list[tuple[Any, Any]] = []
    if node.args:
        init = node.args[0]
        if isinstance(init, dict):
            pairs.extend(init.items())
        elif isinstance(init, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in init):
            pairs.extend((p[0], p[1]) for p in init)
        else:
            return NotImplemented
    pairs.extend(node.items)
    # BUILD state (torch's `_metadata` attribute on state dicts) is instance attributes, not items: dropped.
    return {d.key(k, depth): d.decode(v, depth) for k, v in pairs}


def _h_reconstruct(d: _Decoder, node: _Call, depth: int) -> Any:
    if isinstance(node, Instance) or node.items or node.appends or len(node.args) != 3:
        return NotImplemented
    if node.args[0] != Global("numpy", "ndarray"):
        return NotImplemented  # an ndarray subclass (matrix, memmap …): not plain data
    return d.array_from_state(node.state, depth)


def _h_create_array(d: _Decoder, node: _Call, depth: int) -> Any:
    """dill's ``_create_array(f, args, state, npdict)``: ``f(*args)`` then ``__setstate__(state)``."""
    if node.items or node.appends or len(node.args) != 4:
        return NotImplemented
    f, args, state, npdict = node.args
    if not (isinstance(f, Global) and f.module in _NUMPY_CORE and f.name == "_reconstruct"):
        return NotImplemented
    if not (isinstance(args, tuple) and args and args[0] == Global("numpy", "ndarray")):
        return NotImplemented
    if npdict not in (None, {}):
        return NotImplemented
    return d.array_from_state(state, depth)


def _h_frombuffer(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(4,))
    if args is None:
        return NotImplemented
    buf, _, shape, order = args
    if order not in ("C", "F"):
        raise d.fail(f"bad array order {short_repr(order)}")
    return d.ndarray(shape, d.dtype(node.args[1], depth), order, buf)


def _h_scalar(d: _Decoder, node: _Call, depth: int) -> Any:
    if node.items or node.appends or len(node.args) != 2 or isinstance(node, Instance):
        return NotImplemented
    dt = d.dtype(node.args[0], depth)
    raw = d.decode(node.args[1], depth)
    if not isinstance(raw, bytes) or len(raw) != dt.itemsize:
        raise d.fail(f"numpy scalar of {dt} needs {dt.itemsize} bytes of data")
    return np.frombuffer(raw, dtype=dt, count=1)[0].copy()


def _h_dtype(d: _Decoder, node: _Call, depth: int) -> Any:
    if isinstance(node, Instance) or node.items or node.appends:
        return NotImplemented
    return d.make_dtype(node, depth)


def _h_convert_to_tensor(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(1,))
    if args is None or not isinstance(args[0], (np.ndarray, np.generic)):
        return NotImplemented
    return args[0]


def _h_path(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=None)
    if args is None or not all(isinstance(a, str) for a in args) or node.state is not None:
        return NotImplemented
    return str(_PATHS[_callee(node).dotted](*args))


def _h_set(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(0, 1))
    if args is None or node.state is not None or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
        return NotImplemented
    kind = frozenset if _callee(node).name == "frozenset" else set
    items = args[0] if args else ()
    for item in items:
        _check_hashable(item, d.limits, d.member)
    return kind(items)


def _h_bytes(d: _Decoder, node: _Call, depth: int) -> Any:
    """``bytes()``/``bytearray(b)``/``bytearray(text, 'latin-1')`` as protocols 0-4 write them → bytes."""
    args = d.plain_args(node, depth, counts=(0, 1, 2))
    if args is None:
        return NotImplemented
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    return NotImplemented


def _h_complex(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(1, 2))
    if args is None or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        return NotImplemented
    return complex(*args)


def _h_codecs_encode(d: _Decoder, node: _Call, depth: int) -> Any:
    """Protocol 0-2 pickles store bytes as ``_codecs.encode(latin1_text, 'latin1')``."""
    args = d.plain_args(node, depth, counts=(2,))
    if args is None or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        return NotImplemented
    return args[0].encode("latin-1")


def _h_rebuild_tensor(d: _Decoder, node: _Call, depth: int) -> Any:
    """``_rebuild_tensor(storage, offset, size, stride)``, ``_v2(…, requires_grad, hooks[, metadata])``,
    ``_v3(…, requires_grad, hooks, dtype[, metadata])``."""
    version = _callee(node).name
    counts = {"_rebuild_tensor": (4,), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7, 8)}[version]
    if node.items or node.appends or isinstance(node, Instance) or len(node.args) not in counts:
        return NotImplemented
    storage = node.args[0]
    if not isinstance(storage, TensorStorage):
        return NotImplemented  # storage not resolved (no persistent_load): stays opaque
    offset, size, stride = (d.decode(a, depth) for a in node.args[1:4])
    rest = node.args[4:]
    dtype, meta = storage.dtype, None
    if version == "_rebuild_tensor_v3":
        tag = rest[2]
        if not (isinstance(tag, Global) and tag.module == "torch"):
            raise d.fail(f"tensor dtype is {_name_of(tag)}, expected a torch dtype")
        dtype = _TORCH_DTYPE_ALIASES.get(tag.name, tag.name)
        meta = d.decode(rest[3], depth) if len(rest) > 3 else None
    elif version == "_rebuild_tensor_v2" and len(rest) > 2:
        meta = d.decode(rest[2], depth)
    if len(rest) > 1 and d.decode(rest[1], depth) not in ({}, None):
        return NotImplemented  # backward hooks: keep the whole tensor opaque so it is reported
    if meta is not None and not isinstance(meta, dict):
        raise d.fail("tensor metadata is not a dict")
    return d.tensor(storage, offset, size, stride, dtype, meta)


def _h_rebuild_parameter(d: _Decoder, node: _Call, depth: int) -> Any:
    if node.items or node.appends or isinstance(node, Instance) or len(node.args) not in (3, 4):
        return NotImplemented
    if len(node.args) == 4 and d.decode(node.args[3], depth) not in ({}, None):
        return NotImplemented
    return d.decode(node.args[0], depth)


def _h_rebuild_from_type(d: _Decoder, node: _Call, depth: int) -> Any:
    """``_rebuild_from_type_v2(func, new_type, args, state)`` for plain tensors/parameters only."""
    if node.items or node.appends or isinstance(node, Instance) or len(node.args) != 4:
        return NotImplemented
    func, new_type, args, state = node.args
    plain = (Global("torch", "Tensor"), Global("torch.nn.parameter", "Parameter"))
    if new_type not in plain or not isinstance(args, tuple) or d.decode(state, depth) not in ({}, None):
        return NotImplemented
    return d.call(Reduce(func, args), depth)  # not decode(): a temporary must not enter the id memo


def _h_torch_size(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(0, 1))
    if args is None or (args and not isinstance(args[0], (tuple, list))):
        return NotImplemented
    return tuple(args[0]) if args else ()


def _h_torch_device(d: _Decoder, node: _Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(1, 2))
    if args is None or not isinstance(args[0], str):
        return NotImplemented
    return args[0] if len(args) == 1 or args[1] is None else f"{args[0]}:{args[1]}"


_HANDLERS: dict[str, Callable[[_Decoder, _Call, int], Any]] = {
    "collections.OrderedDict": _h_ordered_dict,
    "numpy.dtype": _h_dtype,
    "dill._dill._create_array": _h_create_array,
    "tensorflow.python.framework.ops.convert_to_tensor": _h_convert_to_tensor,
    "_codecs.encode": _h_codecs_encode,
    "builtins.set": _h_set, "builtins.frozenset": _h_set,
    "builtins.bytearray": _h_bytes, "builtins.bytes": _h_bytes,
    "builtins.complex": _h_complex,
    "torch._utils._rebuild_tensor": _h_rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _h_rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _h_rebuild_tensor,
    "torch._utils._rebuild_parameter": _h_rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _h_rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _h_rebuild_from_type,
    "torch.Size": _h_torch_size,
    "torch.device": _h_torch_device,
    **{f"{mod}._reconstruct": _h_reconstruct for mod in _NUMPY_CORE},
    **{f"{mod}.scalar": _h_scalar for mod in _NUMPY_CORE},
    **{f"{mod}._frombuffer": _h_frombuffer for mod in _NUMPY_NUMERIC},
    **{name: _h_path for name in _PATHS},
}


def decode(obj: Any, *, member: str, limits: PickleLimits = DEFAULT_PICKLE_LIMITS) -> Any:
    """Turn an inert tree (from :func:`load_inert`) into plain data; nothing from the pickle is called.

    Recognised: containers and scalars as themselves; ``OrderedDict`` → dict (order kept); numpy
    arrays, dtypes and scalars (bool/int/float/complex/bytes/str dtypes only); TF eager tensors → their
    ndarray; torch tensors (storage from ``persistent_load``) → ndarray copies; ``torch.Size`` → tuple;
    ``torch.device`` → str; ``pathlib`` paths → str; dataclass/namespace-like objects → :class:`Record`.
    Everything else → :class:`Opaque`. Shared sub-trees decode once and stay shared.
    """
    decoder = _Decoder(member, limits)
    # decode() recurses a few frames per level; make sure a tree at the depth bound fits.
    old_limit = sys.getrecursionlimit()
    room = min(8 * limits.max_depth, 10_000) + 200
    try:
        if old_limit < room + 1000:
            sys.setrecursionlimit(old_limit + room)
        return decoder.decode(obj, 0)
    except ArchiveError:
        raise
    except MemoryError:
        raise ArchiveLimitError("out of memory while decoding the pickle", member=member) from None
    except RecursionError:
        raise ArchiveLimitError("pickle nested too deeply to decode", member=member) from None
    except Exception as exc:  # noqa: BLE001 - anything else is a shape we cannot decode
        raise PickleDecodeError(f"cannot decode pickle: {_describe(exc)}", member=member) from None
    finally:
        sys.setrecursionlimit(old_limit)


def load(
    data: bytes,
    *,
    member: str,
    persistent_load: Callable[[Any], Any] | None = None,
    limits: PickleLimits = DEFAULT_PICKLE_LIMITS,
) -> Any:
    """:func:`load_inert` then :func:`decode`: the usual way to read a ``.dill`` member."""
    return decode(load_inert(data, member=member, persistent_load=persistent_load, limits=limits),
                  member=member, limits=limits)


def find_opaque(obj: Any) -> list[str]:
    """``module.name`` of every global referenced inside the :class:`Opaque` values of decoded data.

    First-seen order, no repeats; e.g. ``['os.system']`` for a pickle that asked to run a shell.
    Iterative, so it is safe on anything :func:`decode` returned.
    """
    names: dict[str, None] = {}
    seen: set[int] = set()
    todo: list[tuple[Any, bool]] = [(obj, False)]
    while todo:
        value, inside_opaque = todo.pop()
        if isinstance(value, Global):
            if inside_opaque:
                names.setdefault(value.dotted)
            continue
        if not isinstance(value, (list, tuple, set, frozenset, dict, Record, Opaque, *_CONTAINERS)):
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, Opaque):
            todo.append((value.raw, True))
            continue
        if isinstance(value, Record):
            children: list[Any] = list(value.fields.values())
        else:
            children = list(_children(value))
        # reversed so the stack pops them in their natural order (func before args)
        todo.extend((child, inside_opaque) for child in reversed(children))
    return list(names)
