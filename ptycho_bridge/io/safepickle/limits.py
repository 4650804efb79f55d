"""The bounds on one pickle stream, and the hashing guard that enforces one of them.

Why: every size, count and depth a pickle declares is checked against :class:`PickleLimits` before
anything is allocated; the interpreter (:mod:`.machine`, :mod:`.opcodes`) and the decoder
(:mod:`.decoder`, :mod:`.handlers`) both hash values taken from the stream, so the guard that keeps
that hashing cheap lives here, next to the limit it enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ptycho_bridge.errors import ArchiveLimitError, PickleDecodeError

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


def check_hashable(value: Any, limits: PickleLimits, member: str) -> None:
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
