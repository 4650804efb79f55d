"""Bounded text about pickle data, for error messages.

Why: a hostile pickle can share sub-trees so that a plain ``repr`` (or an exception message that
embeds one, such as ``KeyError``'s) is exponentially long; every message this package builds from
pickle data goes through these two helpers instead.
"""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """A bounded repr for error messages (plain ``repr`` of a hostile tree can be exponentially long)."""
    return _REPR.repr(value)


def describe(exc: BaseException) -> str:
    """``Type: message`` without calling repr on pickle data (KeyError's message is the key's repr)."""
    if all(isinstance(a, (str, int, float)) for a in exc.args):
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return f"{type(exc).__name__}: {short_repr(exc.args)}"
