"""Progress display and the end-of-command verdict: one place for every verb.

Why: a person watching a 20-60 s ``run`` or ``parity`` needs to see that work is happening, while a
pipe, a log or a CI job must get the same bytes as before. So progress goes to stderr, only when
stderr is a terminal, and never with ``PTYCHO_BRIDGE_NO_PROGRESS=1`` (rich's transient bars leave
nothing behind). The verdict of a multi-item command is one stderr line in one form everywhere
(``N passed, M failed``), so it is never mixed into ``--json`` on stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterable, Iterator, TypeVar

import click

NO_PROGRESS_ENV = "PTYCHO_BRIDGE_NO_PROGRESS"
T = TypeVar("T")


def show_progress() -> bool:
    """Progress only for a person watching: stderr is a terminal and the env switch is not set."""
    if os.environ.get(NO_PROGRESS_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return sys.stderr.isatty()


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def track(items: Iterable[T], *, total: int, label: str, weight: Callable[[T], int] | None = None,
          describe: Callable[[T], str] | None = None) -> Iterator[T]:
    """Yield ``items`` while a transient bar advances (by ``weight(item)``, default 1) up to ``total``.

    ``describe(item)`` replaces the label while that item is being worked on (e.g. "keras on A")."""
    if not show_progress():
        yield from items
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=_stderr_console(), transient=True) as progress:
        task = progress.add_task(label, total=total)
        for item in items:
            if describe is not None:
                progress.update(task, description=describe(item))
            yield item
            progress.advance(task, weight(item) if weight else 1)


@contextlib.contextmanager
def status(label: str) -> Iterator[None]:
    """A transient spinner for one step whose length is unknown (building a graph, writing an archive)."""
    if not show_progress():
        yield
        return
    with _stderr_console().status(label):
        yield


def verdict(passed: int, failed: int, *, words: tuple[str, str] = ("passed", "failed")) -> None:
    """The one-line end-of-command verdict on stderr: ``N passed, M failed``."""
    click.echo(f"{passed} {words[0]}, {failed} {words[1]}", err=True)
