"""``ptycho-bridge validate``: check archives and print one table per archive (or JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ptycho_bridge.cli import util
from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.ops.report import located_error, validate_path


@click.command("validate")
@click.argument("archives", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/validate-report.schema.json).")
@guarded
def command(archives: tuple[Path, ...], as_json: bool) -> None:
    """Check archives: container bounds, schemas, structure, tensor specs and (bridge-2) checksums."""

    results = [validate_path(a) for a in archives]
    doc = {"valid": all(r["valid"] for r in results), "archives": results}
    if as_json:
        emit_json(doc)
    else:
        from rich.table import Table

        console = util.console()
        for r in results:
            table = Table(title=f"{r['path']}  ({r['era'] or 'unknown era'})", title_justify="left")
            table.add_column("check")
            table.add_column("result")
            table.add_column("detail")
            for c in r["checks"]:
                mark = {True: "[green]ok[/green]", False: "[red]FAIL[/red]", None: "n/a"}[c["ok"]]
                table.add_row(c["check"], mark, c["detail"])
            console.print(table)
            for n in r["notes"]:
                console.print(f"note: {n}")
            for w in r["warnings"]:
                console.print(f"[yellow]warning:[/yellow] {w}")
        for r in results:
            if not r["valid"]:
                click.echo(f"error: {located_error(r)}", err=True)
    sys.exit(0 if doc["valid"] else 1)
