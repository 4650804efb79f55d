"""``ptycho-bridge convert ARCHIVE --to {pytorch,tensorflow} -o OUT``: change an archive's backend.

The output is a bridge-2 archive carrying the target backend's legacy members (so upstream's loader
for that backend opens it) and a ``conversion`` block listing the choices made. Where the target
cannot build exactly the same network (``../shared/docs/upstream-architecture.md`` §3.2) the command prints one
``error:`` line naming the field and the reason, exits 1 and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ptycho_bridge.cli.names import BackendChoice
from ptycho_bridge.cli.progress import status
from ptycho_bridge.cli.util import echo_line, emit_json, guarded, no_verify_option, plain
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.atomic import refuse_existing, resolve_output
from ptycho_bridge.ops.convert import plan_conversion, write_conversion


@click.command("convert")
@click.argument("archive", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--to", "to", required=True, type=BackendChoice(),
              help="Target backend: pytorch (alias torch) or tensorflow (alias tf).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder (gets wts.h5.zip) or .zip path.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@no_verify_option
@guarded
def command(archive: Path, to: str, out: Path, force: bool, as_json: bool, no_verify: bool) -> None:
    """Convert a model archive to the other backend, or refuse with the reason the networks differ."""

    target = resolve_output(out)
    refuse_existing(target, force=force)
    arch = read_archive(archive, verify=not no_verify)
    plan = plan_conversion(arch, to)
    with status(f"writing {target.name}"):
        path = write_conversion(arch, plan, target, force=force)
    doc: dict[str, Any] = {
        "source": str(archive),
        "source_era": arch.era,
        "output": str(path),
        **plan.conversion,
        "network": plan.target_spec.to_dict(),
        "warnings": list(plan.warnings),
    }
    if as_json:
        emit_json(doc)
        return
    click.echo(plain(f"wrote {path} (bridge-2, backend {plan.to_backend}; source {arch.era}, backend {plan.from_backend})"))
    for choice in plan.choices:
        click.echo(f"choice: {plain(choice)}")
    for warning in plan.warnings:
        echo_line("warning", warning)
