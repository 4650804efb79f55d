"""The ``ptycho-bridge`` command line (click).

Conventions (design.md §5, check-jsonschema's): ``--json`` prints one JSON document on stdout,
human output is a table, logs and errors go to stderr as one line without a traceback; exit 0 on
success, 1 on a failed check or bad input, 2 on usage errors. Commands that need TensorFlow or
PyTorch import them lazily inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cliutil import console as _console
from .cliutil import emit_json, guarded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ptycho-bridge")
def main() -> None:
    """Inspect, validate, convert, export and parity-check PtychoPINN model archives."""


# -- inspect --------------------------------------------------------------------------------------
@main.command()
@click.argument("archive", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/inspect-report.schema.json).")
@click.option("--tensors", is_flag=True, help="List every canonical tensor with shape and dtype.")
@guarded
def inspect(archive: Path, as_json: bool, tensors: bool) -> None:
    """Show what an archive holds, without TensorFlow or PyTorch and without executing anything."""
    from .reader import read_archive
    from .report import inspect_report

    report = inspect_report(read_archive(archive), tensors=tensors)
    if as_json:
        emit_json(report)
        return
    _print_inspect(report)


def _print_inspect(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("archive", report["path"])
    head.add_row("era", report["era"] + (f" (format {report['format_version']})" if report["format_version"] else ""))
    head.add_row("backend", report["backend"])
    head.add_row("intensity_scale", "—" if report["intensity_scale"] is None else f"{report['intensity_scale']:.10g}")
    probe = report["probe"]
    head.add_row("probe", "—" if probe is None else f"{probe['dtype']} {tuple(probe['shape'])}")
    head.add_row("checksums", "yes" if report["has_checksums"] else "no (legacy era)")
    net = report["network"]
    if net:
        head.add_row("network", f"N={net['N']} gridsize={net['gridsize']} channels={net['channels']} "
                                f"n_filters_scale={net['n_filters_scale']}")
        flags = ["object_big", "probe_big", "pad_object", "cbam_encoder", "cbam_bottleneck", "batch_norm"]
        head.add_row("flags", " ".join(f"{f}={net.get(f)}" for f in flags))
        head.add_row("heads", f"amp_activation={net['amp_activation']} c_outer={net.get('c_outer')} "
                              f"outer_width={net.get('outer_width')} channels_out={net.get('channels_out')}")
    console.print(head)
    models = Table(title="models", title_justify="left")
    for col in ("model", "payload", "tensors", "bytes", "notes"):
        models.add_column(col)
    for name, m in report["models"].items():
        kind = m["payload"].get("kind", "?")
        models.add_row(name, kind, str(m["n_tensors"]), f"{m['tensor_bytes']:,}",
                       "sentinel placeholder" if m["sentinel"] else "")
    console.print(models)
    for name, m in report["models"].items():
        if "tensors" in m:
            t = Table(title=f"{name} tensors", title_justify="left")
            for col in ("canonical name", "shape", "dtype", "source"):
                t.add_column(col)
            for row in m["tensors"]:
                t.add_row(row["name"], str(tuple(row["shape"])), row["dtype"], row["source_name"] or "")
            console.print(t)
    warnings = report["warnings"] + [f"{n}: {w}" for n, m in report["models"].items() for w in m["warnings"]]
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


# -- validate -------------------------------------------------------------------------------------
@main.command()
@click.argument("archives", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/validate-report.schema.json).")
@guarded
def validate(archives: tuple[Path, ...], as_json: bool) -> None:
    """Check archives: container bounds, schemas, structure, tensor specs and (bridge-2) checksums."""
    from .report import validate_path

    results = [validate_path(a) for a in archives]
    doc = {"valid": all(r["valid"] for r in results), "archives": results}
    if as_json:
        emit_json(doc)
    else:
        from rich.table import Table

        console = _console()
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
                click.echo(f"error: {r['path']}: {r['errors'][0]}", err=True)
    sys.exit(0 if doc["valid"] else 1)


# -- schema ---------------------------------------------------------------------------------------
@main.command()
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the schema names.")
def schema(name: str | None, list_: bool) -> None:
    """Print one of the JSON Schemas shipped with ptycho-bridge."""
    from .schema import load_schema, schema_names

    if list_ or not name:
        for n in schema_names():
            click.echo(n)
        return
    if name not in schema_names():
        raise click.BadParameter(f"unknown schema {name!r}; choose from {', '.join(schema_names())}", param_hint="NAME")
    emit_json(load_schema(name))


# -- sample ---------------------------------------------------------------------------------------
@main.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder (gets wts.h5.zip) or .zip path.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@guarded
def sample(out: Path, force: bool) -> None:
    """Write a small deterministic bridge-2 demo archive (no external data needed)."""
    from .atomic import resolve_output
    from .sample import write_sample

    path = write_sample(resolve_output(out), force=force)
    click.echo(str(path))


def _register_commands() -> None:
    """Attach the verbs that live in ``ptycho_bridge/commands/`` (modules that exist)."""
    import importlib

    from .commands import COMMAND_MODULES

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.commands.{name}":
                continue
            raise
        main.add_command(getattr(module, "command"))


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
