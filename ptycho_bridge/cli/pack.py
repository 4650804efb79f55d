"""``ptycho-bridge pack CHECKPOINT -o OUT.zip``: a training checkpoint → an archive upstream's torch loader opens.

CHECKPOINT is a Lightning ``.ckpt``, a bare ``model.pth`` state_dict, or the folder upstream's
``save_pytorch`` writes (``pytorch_manifest.json`` beside the ``.ckpt``). The training intensity scale
comes from ``--intensity-scale`` or ``--params`` (exclusive), else from what the folder records.
"""

from __future__ import annotations

from pathlib import Path

import click

from ptycho_bridge.cli import util
from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.ops.pack import pack


@click.command("pack")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="The archive file to write (e.g. wts.h5.zip).")
@click.option("--intensity-scale", type=float, default=None,
              help="The training intensity scale (upstream's params.dill intensity_scale, not input_scale_factor).")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="The training params (params.dill or params.json); its intensity_scale is used.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (schema pack-report).")
@guarded
def command(checkpoint: Path, out: Path, intensity_scale: float | None, params_path: Path | None, force: bool,
            as_json: bool) -> None:
    """Package a Lightning .ckpt or model.pth with its training params into an archive upstream's torch loader opens."""
    if intensity_scale is not None and params_path is not None:
        raise click.UsageError("--intensity-scale and --params are mutually exclusive")
    result = pack(checkpoint, out, intensity_scale=intensity_scale, params_path=params_path, force=force)
    if as_json:
        emit_json(result.to_dict())
        return
    console = util.console()
    console.print(f"wrote {result.output} (bridge-2 + upstream torch bundle members, from {result.source_kind})")
    console.print(f"intensity_scale {result.intensity_scale!r} from {result.scale_source}")
    for note in result.notes:
        console.print(f"note: {note}")
