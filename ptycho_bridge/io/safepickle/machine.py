"""The interpreter's state for one pickle stream: bounded reads, the stack, the memo and depths.

Why: every limit on a stream (stack size, memo size, nesting depth, hashing cost) is enforced by the
few primitives here, so the opcode handlers in :mod:`.opcodes` cannot forget one; the handlers only
decide what each opcode means and :func:`.opcodes.run` dispatches to them.
"""

from __future__ import annotations

import _compat_pickle
import struct
from typing import Any, Callable, Iterable

from ptycho_bridge.errors import ArchiveLimitError, PickleDecodeError
from ptycho_bridge.io.safepickle.limits import HashGuard, PickleLimits
from ptycho_bridge.io.safepickle.nodes import (
    CONTAINERS,
    Build,
    Call,
    Global,
    PersistentRef,
)


class Machine:
    """One run over one stream. A flat value stack plus a list of MARK positions, as CPython does.

    ``op_pos``/``op_name`` name the opcode being run, for error messages; :func:`.opcodes.run` sets them.
    """

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
        self.hashing = HashGuard(limits, member)
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
        return self._depth.get(id(value), 0) if isinstance(value, CONTAINERS) else 0

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
                self.hashing.insert(target, key)
                target[key] = value
        elif isinstance(target, Call):
            target.items.extend(pairs)
        else:
            raise self.fail(f"SETITEM on {type(target).__name__}")
        self.grew(target, flat)

    def add_items(self, target: Any, items: list[Any], kind: str) -> None:
        if isinstance(target, list) and kind == "append":
            target.extend(items)
        elif isinstance(target, set) and kind == "add":
            for item in items:
                self.hashing.insert(target, item)
                target.add(item)
        elif isinstance(target, Call):
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
        if isinstance(target, Call):
            if target.state is None:
                target.state = state
            elif isinstance(target.state, dict) and isinstance(state, dict):
                target.state.update(state)
            else:
                raise self.fail("BUILD applied twice to one object")
            self.grew(target, (state,))
        else:
            self.stack[-1] = self.made(Build(target, state), (target, state))
