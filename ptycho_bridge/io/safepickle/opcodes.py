"""What each pickle opcode does to the interpreter's state, the byte -> handler table, and the loop.

Why: this is the whole meaning of the pickle format as this reader sees it. Handlers only push inert
values (:mod:`.nodes`) through the bounded primitives of :class:`~.machine.Machine`; none imports or
calls anything named by the stream. Opcode bytes come from :data:`.layout.OPCODES` (the standard
library's table), so the dispatch table cannot drift from the format.
"""

from __future__ import annotations

import codecs
import re
from typing import Any, Callable

from ptycho_bridge.errors import ArchiveLimitError
from ptycho_bridge.io.safepickle.layout import MAX_PROTOCOL, OPCODES, REFUSED_OPCODES
from ptycho_bridge.io.safepickle.machine import Machine
from ptycho_bridge.io.safepickle.nodes import Instance, Reduce

Handler = Callable[[Machine], None]


def _decimal(m: Machine, raw: bytes) -> int:
    if not re.fullmatch(rb"\s*[+-]?\d{1,4300}\s*", raw):
        raise m.fail(f"bad integer literal {raw[:40]!r}")
    return int(raw)


# Each handler is named _op_<OPCODE NAME>; OPS maps the opcode's byte (from layout.OPCODES) to it.
def _op_PROTO(m: Machine) -> None:
    m.proto = m.take(1)[0]
    if m.proto > MAX_PROTOCOL:
        raise m.fail(f"pickle protocol newer than {MAX_PROTOCOL}")


def _op_FRAME(m: Machine) -> None:
    if m.unpack("<Q") > m.end - m.pos:
        raise m.fail("frame longer than the remaining stream")


def _op_STOP(m: Machine) -> None:  # handled in run()
    pass


def _op_NONE(m: Machine) -> None: m.push(None)
def _op_NEWTRUE(m: Machine) -> None: m.push(True)
def _op_NEWFALSE(m: Machine) -> None: m.push(False)


def _op_INT(m: Machine) -> None:
    raw = m.line()
    m.push(False if raw == b"00" else True if raw == b"01" else _decimal(m, raw))


def _op_BININT(m: Machine) -> None: m.push(m.unpack("<i"))
def _op_BININT1(m: Machine) -> None: m.push(m.take(1)[0])
def _op_BININT2(m: Machine) -> None: m.push(m.unpack("<H"))


def _op_LONG(m: Machine) -> None:
    raw = m.line()
    m.push(_decimal(m, raw[:-1] if raw.endswith(b"L") else raw))


def _op_LONG1(m: Machine) -> None: m.push(int.from_bytes(m.take(m.take(1)[0]), "little", signed=True))
def _op_LONG4(m: Machine) -> None: m.push(int.from_bytes(m.take(int(m.unpack("<i"))), "little", signed=True))
def _op_FLOAT(m: Machine) -> None: m.push(float(m.line()))
def _op_BINFLOAT(m: Machine) -> None: m.push(m.unpack(">d"))


def _op_STRING(m: Machine) -> None:
    raw = m.line().rstrip(b"\r")
    if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
        raise m.fail("STRING argument is not quoted")
    m.push(m.text(codecs.escape_decode(raw[1:-1])[0]))


def _op_BINSTRING(m: Machine) -> None: m.push(m.text(m.take(int(m.unpack("<i")))))
def _op_SHORT_BINSTRING(m: Machine) -> None: m.push(m.text(m.take(m.take(1)[0])))
def _op_UNICODE(m: Machine) -> None: m.push(m.line().decode("raw-unicode-escape"))
def _op_BINUNICODE(m: Machine) -> None: m.push(m.take(int(m.unpack("<I"))).decode("utf-8", "surrogatepass"))
def _op_SHORT_BINUNICODE(m: Machine) -> None: m.push(m.take(m.take(1)[0]).decode("utf-8", "surrogatepass"))
def _op_BINUNICODE8(m: Machine) -> None: m.push(m.take(int(m.unpack("<Q"))).decode("utf-8", "surrogatepass"))
def _op_BINBYTES(m: Machine) -> None: m.push(m.take(int(m.unpack("<I"))))
def _op_SHORT_BINBYTES(m: Machine) -> None: m.push(m.take(m.take(1)[0]))
def _op_BINBYTES8(m: Machine) -> None: m.push(m.take(int(m.unpack("<Q"))))
def _op_BYTEARRAY8(m: Machine) -> None: m.push(bytearray(m.take(int(m.unpack("<Q")))))


def _op_MARK(m: Machine) -> None:
    if len(m.stack) + len(m.marks) >= m.limits.max_stack:
        raise ArchiveLimitError(f"pickle stack exceeds {m.limits.max_stack} entries", member=m.member)
    m.marks.append(len(m.stack))


def _op_POP(m: Machine) -> None:
    if len(m.stack) > (m.marks[-1] if m.marks else 0):
        m.stack.pop()
    else:
        m.pop_mark()


def _op_POP_MARK(m: Machine) -> None: m.pop_mark()
def _op_DUP(m: Machine) -> None: m.push(m.top())
def _op_EMPTY_TUPLE(m: Machine) -> None: m.push(())


def _op_TUPLE(m: Machine) -> None:
    items = tuple(m.pop_mark())
    m.push(m.made(items, items) if items else items)


def _tuple_n(n: int) -> Handler:
    def handler(m: Machine) -> None:
        items = tuple(reversed([m.pop() for _ in range(n)]))
        m.push(m.made(items, items))
    return handler


def _op_EMPTY_LIST(m: Machine) -> None: m.push(m.made([], ()))
def _op_EMPTY_DICT(m: Machine) -> None: m.push(m.made({}, ()))
def _op_EMPTY_SET(m: Machine) -> None: m.push(m.made(set(), ()))


def _op_LIST(m: Machine) -> None:
    items = m.pop_mark()
    m.push(m.made(items, items))


def _op_DICT(m: Machine) -> None:
    flat = m.pop_mark()
    target = m.made({}, ())
    m.add_pairs(target, flat)
    m.push(target)


def _op_FROZENSET(m: Machine) -> None:
    items = m.pop_mark()
    building: set = set()
    for item in items:
        m.hashing.insert(building, item)
        building.add(item)
    m.hashing.release(building)
    value = frozenset(building)
    m.push(m.made(value, items))


def _op_APPEND(m: Machine) -> None:
    item = m.pop()
    m.add_items(m.top(), [item], "append")


def _op_APPENDS(m: Machine) -> None:
    items = m.pop_mark()
    m.add_items(m.top(), items, "append")


def _op_ADDITEMS(m: Machine) -> None:
    items = m.pop_mark()
    m.add_items(m.top(), items, "add")


def _op_SETITEM(m: Machine) -> None:
    value = m.pop()
    key = m.pop()
    m.add_pairs(m.top(), [key, value])


def _op_SETITEMS(m: Machine) -> None:
    flat = m.pop_mark()
    m.add_pairs(m.top(), flat)


def _op_GET(m: Machine) -> None: m.get(_decimal(m, m.line()))
def _op_BINGET(m: Machine) -> None: m.get(m.take(1)[0])
def _op_LONG_BINGET(m: Machine) -> None: m.get(int(m.unpack("<I")))
def _op_PUT(m: Machine) -> None: m.put(_decimal(m, m.line()))
def _op_BINPUT(m: Machine) -> None: m.put(m.take(1)[0])
def _op_LONG_BINPUT(m: Machine) -> None: m.put(int(m.unpack("<I")))
def _op_MEMOIZE(m: Machine) -> None: m.put(len(m.memo))


def _op_GLOBAL(m: Machine) -> None:
    module = m.line().decode("utf-8")
    name = m.line().decode("utf-8")
    m.push(m.global_ref(module, name))


def _op_STACK_GLOBAL(m: Machine) -> None:
    name = m.pop()
    module = m.pop()
    m.push(m.global_ref(module, name))


def _op_REDUCE(m: Machine) -> None:
    args = m.pop()
    func = m.pop()
    if not isinstance(args, tuple):
        raise m.fail("REDUCE arguments are not a tuple")
    m.push(m.made(Reduce(func, args), (func, args)))


def _op_BUILD(m: Machine) -> None: m.build()


def _op_NEWOBJ(m: Machine) -> None:
    args = m.pop()
    cls = m.pop()
    if not isinstance(args, tuple):
        raise m.fail("NEWOBJ arguments are not a tuple")
    m.push(m.made(Instance(cls, args), (cls, args)))


def _op_NEWOBJ_EX(m: Machine) -> None:
    kwargs = m.pop()
    args = m.pop()
    cls = m.pop()
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise m.fail("NEWOBJ_EX arguments are not (tuple, dict)")
    m.push(m.made(Instance(cls, args, kwargs), (cls, args, kwargs)))


def _op_OBJ(m: Machine) -> None:
    items = m.pop_mark()
    if not items:
        raise m.fail("OBJ without a class")
    args = tuple(items[1:])
    m.push(m.made(Instance(items[0], args), (items[0], m.made(args, args))))


def _op_INST(m: Machine) -> None:
    cls = m.global_ref(m.line().decode("utf-8"), m.line().decode("utf-8"))
    args = tuple(m.pop_mark())
    m.push(m.made(Instance(cls, args), (m.made(args, args),)))


def _op_PERSID(m: Machine) -> None: m.persistent(m.line().decode("ascii"))
def _op_BINPERSID(m: Machine) -> None: m.persistent(m.pop())


def _refuse(why: str) -> Handler:
    def handler(m: Machine) -> None:
        raise m.fail(why)
    return handler


def _table() -> dict[int, tuple[str, Handler]]:
    """Opcode byte -> (opcode name, handler) for every opcode this reader runs or refuses."""
    named: dict[str, Handler] = {
        name[len("_op_"):]: handler for name, handler in globals().items() if name.startswith("_op_")
    }
    named.update({f"TUPLE{n}": _tuple_n(n) for n in (1, 2, 3)})
    named.update({name: _refuse(why) for name, why in REFUSED_OPCODES.items()})
    return {OPCODES[name]: (name, handler) for name, handler in named.items()}


OPS: dict[int, tuple[str, Handler]] = _table()


def run(m: Machine) -> Any:
    """Run the stream to its ``STOP``; return the single value left on the stack (the inert tree)."""
    ops = 0
    data = m.data
    while True:
        if m.pos >= m.end:
            m.op_pos, m.op_name = m.pos, "<end>"
            raise m.fail("truncated stream: no STOP opcode")
        ops += 1
        if ops > m.limits.max_ops:
            raise ArchiveLimitError(f"pickle runs more than {m.limits.max_ops} opcodes", member=m.member)
        m.op_pos = m.pos
        code = data[m.pos]
        m.pos += 1
        entry = OPS.get(code)
        if entry is None:
            m.op_name = f"0x{code:02x}"
            raise m.fail("unknown opcode")
        m.op_name, handler = entry
        if handler is _op_STOP:
            if m.marks or len(m.stack) != 1:
                raise m.fail("STOP with an unbalanced stack")
            return m.stack[0]
        handler(m)
