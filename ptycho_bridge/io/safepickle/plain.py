"""Inert tree -> plain data, and the reports on what stayed opaque: the package's reading entry points.

Why: callers want ``load(bytes) -> dict of numpy arrays`` and a list of what could not be decoded;
these functions give them that over :func:`.inert.load_inert` and :class:`.decoder.Decoder` with the
handler table of :mod:`.handlers`, and turn every failure (including memory and recursion exhaustion)
into an :class:`~ptycho_bridge.errors.ArchiveError`.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from ptycho_bridge.errors import ArchiveError, ArchiveLimitError, PickleDecodeError
from ptycho_bridge.io.safepickle.decoder import Decoder, Opaque, Record
from ptycho_bridge.io.safepickle.handlers import HANDLERS
from ptycho_bridge.io.safepickle.inert import load_inert
from ptycho_bridge.io.safepickle.limits import DEFAULT_PICKLE_LIMITS, PickleLimits
from ptycho_bridge.io.safepickle.nodes import CONTAINERS, Global, children_of
from ptycho_bridge.io.safepickle.reprs import describe


def decode(obj: Any, *, member: str, limits: PickleLimits = DEFAULT_PICKLE_LIMITS, defer_arrays: bool = False) -> Any:
    """Turn an inert tree (from :func:`load_inert`) into plain data; nothing from the pickle is called.

    Recognised: containers and scalars as themselves; ``OrderedDict`` → dict (order kept); numpy
    arrays, dtypes and scalars (bool/int/float/complex/bytes/str dtypes only); TF eager tensors → their
    ndarray; torch tensors (storage from ``persistent_load``) → ndarray copies; ``torch.Size`` → tuple;
    ``torch.device`` → str; ``pathlib`` paths → str; dataclass/namespace-like objects → :class:`Record`.
    Everything else → :class:`Opaque`. Shared sub-trees decode once and stay shared.
    ``defer_arrays``: arrays and tensors come out as :class:`~ptycho_bridge.io.deferred.DeferredArray`
    (checked now, built on use; see :mod:`ptycho_bridge.io.deferred`).
    """
    decoder = Decoder(member, limits, HANDLERS, defer=defer_arrays)
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
        raise PickleDecodeError(f"cannot decode pickle: {describe(exc)}", member=member) from None
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
        if not isinstance(value, (list, tuple, set, frozenset, dict, Record, Opaque, *CONTAINERS)):
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
            children = list(children_of(value))
        # reversed so the stack pops them in their natural order (func before args)
        todo.extend((child, inside_opaque) for child in reversed(children))
    return list(names)
