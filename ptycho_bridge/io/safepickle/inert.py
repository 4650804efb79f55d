"""Pickle bytes -> inert tree: the two ways to run the interpreter over a stream.

Why: :func:`load_inert` is the only door from untrusted pickle bytes into this package's data (the
tree of :mod:`.nodes`), and :func:`globals_in` the cheap one for reports. Both turn every failure into
an :class:`~ptycho_bridge.errors.ArchiveError`, and :func:`load_inert` re-checks the finished tree
for depth and cycles, which the interpreter alone cannot see.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from ptycho_bridge.errors import ArchiveError, ArchiveLimitError, PickleDecodeError
from ptycho_bridge.io.safepickle.limits import DEFAULT_PICKLE_LIMITS, PickleLimits
from ptycho_bridge.io.safepickle.machine import Machine
from ptycho_bridge.io.safepickle.nodes import CONTAINERS, children_of
from ptycho_bridge.io.safepickle.opcodes import run
from ptycho_bridge.io.safepickle.reprs import describe


def _check_tree(root: Any, limits: PickleLimits, member: str) -> None:
    """Exact depth bound and cycle check on the finished tree (mutations after nesting can deepen it).

    Iterative and memoised by identity, so shared sub-trees (memo ``GET``) cost nothing extra.
    """
    done: dict[int, int] = {}
    on_path: set[int] = set()
    if not isinstance(root, CONTAINERS):
        return
    path: list[tuple[Any, Iterator[Any], int]] = [(root, children_of(root), 0)]
    on_path.add(id(root))
    while path:
        node, children, deepest = path[-1]
        for child in children:
            if not isinstance(child, CONTAINERS):
                continue
            if id(child) in done:
                deepest = max(deepest, done[id(child)])
                continue
            if id(child) in on_path:
                raise PickleDecodeError("pickle holds a self-referencing structure", member=member)
            if len(path) >= limits.max_depth:
                raise ArchiveLimitError(f"pickle nested deeper than {limits.max_depth} levels", member=member)
            path[-1] = (node, children, deepest)
            path.append((child, children_of(child), 0))
            on_path.add(id(child))
            break
        else:
            path.pop()
            on_path.discard(id(node))
            done[id(node)] = deepest + 1
            if path:
                parent, siblings, best = path[-1]
                path[-1] = (parent, siblings, max(best, deepest + 1))


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
    machine = Machine(data, member, persistent_load, limits)
    try:
        root = run(machine)
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
            f"malformed pickle at byte {machine.op_pos} (opcode {machine.op_name}): {describe(exc)}",
            member=member,
        ) from None


def globals_in(data: bytes, member: str, *, limits: PickleLimits = DEFAULT_PICKLE_LIMITS) -> list[tuple[str, str]]:
    """Every global the stream references, ``(module, name)`` in first-seen order, for reports.

    Runs the same inert interpreter (so ``STACK_GLOBAL`` names built from memo entries are resolved)
    with persistent ids left unresolved; nothing is imported.
    """
    seen: dict[tuple[str, str], None] = {}
    machine = Machine(data, member, None, limits, on_global=lambda g: seen.setdefault((g.module, g.name)))
    try:
        run(machine)
    except ArchiveError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PickleDecodeError(
            f"malformed pickle at byte {machine.op_pos} (opcode {machine.op_name}): {describe(exc)}",
            member=member,
        ) from None
    return list(seen)
