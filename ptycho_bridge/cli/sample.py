"""``ptycho-bridge sample``: write the bundled deterministic demo archive and a small scan beside it.

The scan (``dataset.npz``, 64 simulated N=64 patterns) lets ``reconstruct`` run without the fixtures.
"""

from __future__ import annotations

from pathlib import Path

import click

from ptycho_bridge.cli.util import guarded
from ptycho_bridge.io.atomic import refuse_existing, resolve_output
from ptycho_bridge.ops.sample import DATASET_NAME, write_sample, write_sample_dataset


@click.command("sample")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder (gets wts.h5.zip) or .zip path.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@guarded
def command(out: Path, force: bool) -> None:
    """Write a small deterministic bridge-2 demo archive (no external data needed)."""

    target = resolve_output(out)
    refuse_existing(target.parent / DATASET_NAME, force=force)  # refuse before writing either file
    path = write_sample(target, force=force)
    dataset = write_sample_dataset(path.parent / DATASET_NAME, force=force)
    click.echo(str(path))  # stdout stays the archive path alone (scripts capture it)
    click.echo(f"scan for reconstruct: {dataset}", err=True)
