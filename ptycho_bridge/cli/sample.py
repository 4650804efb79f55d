"""``ptycho-bridge sample``: write the bundled demo archive and a simulated scan beside it.

Default: the trained sample model and a held-out scan (``dataset.npz``, 144 simulated N=64 patterns of an object
the model never saw, with ``objectGuess``), so ``reconstruct`` shows a real reconstruction and its quality
figures. ``--untrained``: the deterministic untrained archive and its 64-pattern scan (what tests rely on).
"""

from __future__ import annotations

from pathlib import Path

import click

from ptycho_bridge.cli.util import guarded
from ptycho_bridge.io.atomic import refuse_existing, resolve_output
from ptycho_bridge.ops.sample import (
    DATASET_NAME,
    write_held_out_dataset,
    write_sample,
    write_sample_dataset,
    write_trained_sample,
)


@click.command("sample")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder (gets wts.h5.zip) or .zip path.")
@click.option("--untrained", is_flag=True,
              help="Write the deterministic untrained archive (seeded weights) and its 64-pattern scan instead.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@guarded
def command(out: Path, untrained: bool, force: bool) -> None:
    """Write the trained demo archive and a held-out simulated scan (no external data needed)."""

    target = resolve_output(out)
    refuse_existing(target.parent / DATASET_NAME, force=force)  # refuse before writing either file
    if untrained:
        path = write_sample(target, force=force)
        dataset = write_sample_dataset(path.parent / DATASET_NAME, force=force)
    else:
        path = write_trained_sample(target, force=force)
        dataset = write_held_out_dataset(path.parent / DATASET_NAME, force=force)
    click.echo(str(path))  # stdout stays the archive path alone (scripts capture it)
    click.echo(f"scan for reconstruct: {dataset}", err=True)
