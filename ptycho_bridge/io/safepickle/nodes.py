"""The inert tree: what a pickle stream becomes when nothing in it is imported or called.

Why: the interpreter (:mod:`.machine`, :mod:`.opcodes`) records every global reference, call and
persistent id as one of these plain records instead of acting on it, and the decoder
(:mod:`.decoder`) and reports read them back. The tree walkers that both sides need (the callee of
a call, a node's children, a printable name) live beside the types they walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ptycho_bridge.io.safepickle.reprs import short_repr


@dataclass(frozen=True)
class Global:
    """A global reference (``GLOBAL``/``STACK_GLOBAL``/``INST``): a name, never imported."""

    module: str
    name: str

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False, kw_only=True, repr=False)
class Call:
    """What the pickle did to the result of a call: ``BUILD`` state, ``SETITEM(S)`` pairs, ``APPEND(S)``.

    Reprs of inert nodes are shallow on purpose: a pickle can share sub-trees so that a full repr
    would be exponentially long.
    """

    state: Any = None
    items: list[tuple[Any, Any]] = field(default_factory=list)
    appends: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({name_of(self)}, {len(self.args)} args)"  # type: ignore[attr-defined]


@dataclass(eq=False, repr=False)
class Reduce(Call):
    """``REDUCE``: the pickle wanted ``func(*args)``; we only remember that it asked."""

    func: Any
    args: tuple


@dataclass(eq=False, repr=False)
class Instance(Call):
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
        return f"Build({name_of(self.target)})"


@dataclass(eq=False)
class PersistentRef:
    """A persistent id nobody resolved (no ``persistent_load`` given)."""

    pid: Any

    def __repr__(self) -> str:
        return f"PersistentRef({short_repr(self.pid)})"


# every node type that holds other values (what the depth and cycle checks walk)
CONTAINERS = (list, tuple, dict, set, frozenset, Call, Build, PersistentRef)


def callee(node: Call) -> Any:
    """What a call record calls: ``func`` of a :class:`Reduce`, ``cls`` of an :class:`Instance`."""
    return node.func if isinstance(node, Reduce) else node.cls


def name_of(value: Any) -> str:
    """``module.name`` of a global, or of the callable a call record names; ``<dynamic>`` otherwise."""
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, Call):
        inner = callee(value)
        return inner.dotted if isinstance(inner, Global) else "<dynamic>"
    return f"<{type(value).__name__}>"


def children_of(value: Any) -> Iterator[Any]:
    """The values an inert node points to (for the depth/cycle check)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        yield from value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield item
    elif isinstance(value, Call):
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
