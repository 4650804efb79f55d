"""Human tables that never cut an identifier, at one width policy for every verb.

Why: a tensor name cut to ``model.autoencoder.enc…`` or a model to ``diffraction_to_…`` cannot be
copied into the next command. Identifier columns therefore *fold* (break inside the word) on a
narrow terminal instead of ending in an ellipsis, and when stdout is not a terminal (a pipe, a log,
``| less``) the console is as wide as the widest table needs, so every row stays on one line and
``inspect`` and ``diff`` print at the same, natural, width.
"""

from __future__ import annotations

from typing import Any, Iterable

PIPE_WIDTH = 1000  # not a terminal: wide enough that no table wraps; tables still take their natural width


def console():  # type: ignore[no-untyped-def]
    """A stdout console: the terminal's width on a terminal, :data:`PIPE_WIDTH` otherwise."""
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)
    if not con.is_terminal:
        con = Console(highlight=False, soft_wrap=True, width=PIPE_WIDTH)
    return con


def table(columns: Iterable[str], *, title: str | None = None, right: Iterable[str] = (), **kwargs: Any):  # type: ignore[no-untyped-def]
    """A rich table whose every column folds rather than truncates (``right``: right-aligned columns)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", **kwargs)
    right = set(right)
    for col in columns:
        t.add_column(col, overflow="fold", justify="right" if col in right else "left")
    return t
