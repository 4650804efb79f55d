"""One vocabulary on the command line: backends ``pytorch`` and ``tensorflow``, engines ``torch``, ``keras``, ``onnx``.

Why: ``--engine torch`` next to ``--to pytorch`` made ``--to torch`` the natural guess, and it was
refused. Wherever a *backend* is named, ``torch`` and ``tf`` are accepted as aliases and normalised
to the canonical names, which are the only ones in JSON output and in archives.
"""

from __future__ import annotations

from typing import Any

import click

BACKENDS = ("pytorch", "tensorflow")
BACKEND_ALIASES = {"torch": "pytorch", "tf": "tensorflow"}


class BackendChoice(click.Choice):
    """``pytorch``/``tensorflow``, also accepting ``torch``/``tf`` (any case); the value is the canonical name."""

    def __init__(self) -> None:
        super().__init__(list(BACKENDS), case_sensitive=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            value = BACKEND_ALIASES.get(value.strip().lower(), value)
        return super().convert(value, param, ctx)

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:
        return "[pytorch|tensorflow]"  # aliases torch|tf are listed in the option's help


def normalise_backend(name: str) -> str:
    """The canonical backend name of ``name`` (alias or not); unknown names are returned unchanged."""
    return BACKEND_ALIASES.get(name.strip().lower(), name.strip().lower())
