"""``ptycho-bridge validate``: check archives and print one table per archive (or JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ptycho_bridge.cli import batch, util
from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.ops.report import located_error


@click.command("validate")
@click.argument("archives", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/validate-report.schema.json).")
@click.option("--jsonl", "as_jsonl", is_flag=True,
              help="Stream one report per archive per line (an item of validate-report's archives).")
@click.option("-r", "--recursive", is_flag=True, help=batch.RECURSIVE_HELP)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help=batch.JOBS_HELP)
@guarded
def command(archives: tuple[Path, ...], as_json: bool, as_jsonl: bool, recursive: bool, jobs: int | None) -> None:
    """Check archives: container bounds, schemas, structure, tensor specs and (bridge-2) checksums."""

    paths = batch.expand(archives, recursive)
    single = batch.resolve_single(archives, paths)
    if as_jsonl:
        invalid = 0
        for r in batch.imap(batch.validate_one, paths, jobs or batch.default_jobs()):
            invalid += not r["valid"]
            batch.emit_line(r)
        batch.verdict(len(paths) - invalid, invalid, ("valid", "invalid"))
        sys.exit(1 if invalid else 0)
    results = list(batch.imap(batch.validate_one, [single] if single is not None else paths,
                              jobs or batch.default_jobs()))
    doc = {"valid": all(r["valid"] for r in results), "archives": results}
    if as_json:
        emit_json(doc)
    else:
        from rich.table import Table

        console = util.console()
        for r in results:
            table = Table(title=util.cell(f"{r['path']}  ({r['era'] or 'unknown era'})"), title_justify="left")
            table.add_column("check")
            table.add_column("result")
            table.add_column("detail")
            for c in r["checks"]:
                mark = {True: "[green]ok[/green]", False: "[red]FAIL[/red]", None: "n/a"}[c["ok"]]
                table.add_row(util.cell(c["check"]), mark, util.cell(c["detail"]))
            console.print(table)
            for n in r["notes"]:
                console.print(f"note: {util.cell(n)}")
            for w in r["warnings"]:
                console.print(f"[yellow]warning:[/yellow] {util.cell(w)}")
        for r in results:
            if not r["valid"]:
                util.echo_line("error", located_error(r))
    if single is None:
        invalid = sum(not r["valid"] for r in results)
        batch.verdict(len(results) - invalid, invalid, ("valid", "invalid"))
    sys.exit(0 if doc["valid"] else 1)
