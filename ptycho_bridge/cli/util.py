"""Shared CLI plumbing: one-line errors with exit code 1, JSON emission, the rich console.

Why: every verb module (``ptycho_bridge/commands/*``) and ``cli`` use the same conventions; keeping
them here (not in ``cli``) lets a verb module be imported on its own without a circular import.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, NoReturn

import click

from ptycho_bridge.errors import BridgeError


def _die(exc: BaseException) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
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


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every deliberate ptycho-bridge error into one stderr line and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BridgeError as exc:
            _die(exc)
        except (MemoryError, RecursionError) as exc:
            _die(RuntimeError(f"resource limit hit while reading input ({exc.__class__.__name__})"))

    return wrapper


def no_verify_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-verify``: skip the sha256 check of the bytes a command reads (bridge-2; docs/security.md)."""
    return click.option("--no-verify", "no_verify", is_flag=True,
                        help="Do not check the sha256 of the tensor bytes read (bridge-2); only for archives you trust.")(fn)


def console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)
