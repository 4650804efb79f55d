"""``ptycho-bridge schema``: print a shipped JSON Schema."""

from __future__ import annotations

import click

from ptycho_bridge.cli.util import emit_json
from ptycho_bridge.schema import load_schema, schema_names


@click.command("schema")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the schema names.")
def command(name: str | None, list_: bool) -> None:
    """Print one of the JSON Schemas shipped with ptycho-bridge."""

    if list_ or not name:
        for n in schema_names():
            click.echo(n)
        return
    if name not in schema_names():
        raise click.BadParameter(f"unknown schema {name!r}; choose from {', '.join(schema_names())}", param_hint="NAME")
    emit_json(load_schema(name))
