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
    max_broadcast_bytes: int = 64 * 1024**2  # one tensor larger than its storage (stride 0 / overlapping views)
    max_key_items: int = 10_000  # items inside one dict key / set item (hashing a shared-tuple DAG is exponential)
    max_hash_work: int = 5_000_000  # values hashed as dict keys / set items over one stream (linear-time bound)
    max_hash_collisions: int = 8  # distinct keys of one dict/set sharing one hash value (O(n^2) dict building)


DEFAULT_PICKLE_LIMITS = PickleLimits()


def check_hashable(value: Any, limits: PickleLimits, member: str) -> int:
    """Refuse dict keys / set items that are expensive to hash; return how many values hashing walks.

    ``hash()`` of a tuple is not cached, so 60 levels of ``(x, x)`` built with memo GETs would take
    2**60 steps: at most ``max_key_items`` values are allowed inside one key. Integers beyond 64 bits
    are refused because ``hash(n) == hash(n + k * (2**61 - 1))`` lets a pickle flood one dict slot.
    """
    count = 1
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
    return count


class HashGuard:
    """The hashing budget of one stream: every dict key / set item goes through :meth:`insert`.

    Why: a bounded key can still be hashed again and again (``BINGET`` of a memoised 9,999-item tuple
    key, then ``SETITEM``, repeated: ~330 s from an 820 KB stream), so the values walked are counted
    over the whole stream against ``max_hash_work``. And keys whose hashes collide (``complex(-1000003*i,
    i)`` all hash to 0) make building one dict O(n²): at most ``max_hash_collisions`` distinct keys of
    one container may share a hash. Both checks happen *before* the key reaches the dict.
    """

    def __init__(self, limits: PickleLimits, member: str) -> None:
        self.limits = limits
        self.member = member
        self.work = 0
        self._slots: dict[int, dict[int, int]] = {}  # id(container) -> hash -> distinct keys with it

    def charge(self, value: Any) -> None:
        self.work += check_hashable(value, self.limits, self.member)
        if self.work > self.limits.max_hash_work:
            raise ArchiveLimitError(
                f"pickle hashes more than {self.limits.max_hash_work} values as dict keys or set items",
                member=self.member,
            )

    def insert(self, target: dict | set, key: Any) -> None:
        """Charge ``key``'s hashing, then refuse it if it would collide too often inside ``target``."""
        self.charge(key)
        if key in target:  # a replacement: the probe chain is already bounded
            return
        slots = self._slots.setdefault(id(target), {})
        h = hash(key)
        slots[h] = slots.get(h, 0) + 1
        if slots[h] > self.limits.max_hash_collisions:
            raise ArchiveLimitError(
                f"more than {self.limits.max_hash_collisions} dict keys or set items share one hash value "
                "(hash flooding)", member=self.member,
            )

    def release(self, target: dict | set) -> None:
        """Forget a finished container (the decoder's; the machine's live as long as the stream)."""
        self._slots.pop(id(target), None)
