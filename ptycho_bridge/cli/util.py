"""Shared CLI plumbing: one-line errors with exit code 1, JSON emission, the rich console.

Why: every verb module (``ptycho_bridge/cli/*``) and ``cli`` use the same conventions; keeping
them here (not in ``cli``) lets a verb module be imported on its own without a circular import.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, NoReturn

import click

from ptycho_bridge.errors import BridgeError


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def plain(text: Any) -> str:
    """``text`` with every non-printable character shown as an escape (``\\n``, ``\\x1b``, ``\\u2028``).

    Why: archive strings (model names, dtypes, member names, error details) reach terminals and
    logs. A newline in a dtype would print a second, spoofed ``error:``/``ok:`` line; an OSC escape
    (``ESC ] 0 ; … BEL``) would retitle or rewrite the terminal, and it does harm in a log just as
    well, so escaping does not depend on stderr being a terminal. The one escaping function for
    human output: :func:`_die`, every ``error:``/``warning:`` line and :func:`cell` use it. (JSON
    output escapes control characters by itself: ``json.dumps`` with ``ensure_ascii``.)
    """
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def cell(text: Any) -> str:
    """:func:`plain` text made literal for rich (tables, ``console.print``): ``[red]`` is not markup."""
    from rich.markup import escape

    return escape(plain(text))


def echo_line(prefix: str, text: Any) -> None:
    """One ``prefix: text`` line on stderr, the text escaped (:func:`plain`)."""
    click.echo(f"{prefix}: {plain(text)}", err=True)


def _die(exc: BaseException) -> NoReturn:
    echo_line("error", exc)
    sys.exit(1)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return {"dtype": str(o.dtype), "shape": list(o.shape)}
    return str(o)


# Set (to anything non-empty) to let unexpected exceptions through as tracebacks; the test suite sets
# it so that the safety net below never hides a missing root-cause fix.
STRICT_ENV = "PTYCHO_BRIDGE_STRICT_ERRORS"
SAFETY_NET = (ValueError, TypeError, OverflowError, KeyError, IndexError, AttributeError, UnicodeError)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every deliberate ptycho-bridge error into one stderr line and exit code 1.

    A safety net (issue 12): an unexpected ``ValueError``/``TypeError``/``OverflowError``/… (a value
    of a type no reader checked) is also one ``error:`` line, marked as unexpected, instead of a
    traceback; with :data:`STRICT_ENV` set (the tests) it propagates so that the root cause is fixed.
    """
    import functools
    import os

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BridgeError as exc:
            _die(exc)
        except (MemoryError, RecursionError) as exc:
            _die(RuntimeError(f"resource limit hit while reading input ({exc.__class__.__name__})"))
        except SAFETY_NET as exc:
            if os.environ.get(STRICT_ENV):
                raise
            _die(RuntimeError(f"unexpected {exc.__class__.__name__} while handling the input "
                              f"({str(exc)[:200]}); the input is malformed in a way no check names yet"))

    return wrapper


def no_verify_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-verify``: skip the sha256 check of the bytes a command reads (bridge-2; docs/security.md)."""
    return click.option("--no-verify", "no_verify", is_flag=True,
                        help="Do not check the sha256 of the tensor bytes read (bridge-2); only for archives you trust.")(fn)


def console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)
