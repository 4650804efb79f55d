"""``ptycho-bridge export-ckpt ARCHIVE -o model.ckpt``: the Lightning checkpoint Ptychodus 1.7 loads.

Ptychodus' PyTorch reconstructor opens only upstream torchapi-devel Lightning checkpoints; this verb
writes one for any archive whose network that Lightning module builds exactly, and otherwise prints
one ``error:`` line naming the field that differs (:mod:`ptycho_bridge.ops.export_ckpt`). Neither
torch nor lightning is imported; the file is validated by reading it back, then renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import click

from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.ops.export_ckpt import export_checkpoint


@click.command("export-ckpt")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output checkpoint file (for example model.ckpt).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/export-ckpt-report.schema.json).")
@guarded
def command(archive: Path, out: Path, force: bool, as_json: bool) -> None:
    """Write ARCHIVE's network as the Lightning .ckpt Ptychodus 1.7 loads (upstream torchapi-devel), or refuse."""

    report = export_checkpoint(archive, out, force=force)
    if as_json:
        emit_json(report)
        return
    click.echo(f"wrote {report['output']} (Lightning checkpoint, upstream {report['variant']}; "
               f"{report['n_tensors']} tensors; source {report['source_era']}, backend {report['source_backend']})")
    for note in report["notes"]:
        click.echo(f"note: {note}")
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
