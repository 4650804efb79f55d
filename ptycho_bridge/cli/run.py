"""``ptycho-bridge run``: run an archive's network on a batch of diffraction patterns, any engine.

Input ``.npz``: ``amplitude`` (canonical ``x_norm`` float32 ``[B, C, N, N]``, optional
``positions``) or an upstream fixture ``golden.npz`` (converted with
:func:`ptycho_bridge.conventions.golden_canonical_input`, see :func:`ptycho_bridge.parity.load_input`).
Output ``.npz``: ``object`` complex64 ``[B, Cout, N, N]`` and, when positions are given and the
network is ``object_big`` with a known ``padded_size``, ``trimmed_object`` ``[B, N, N, 1]`` — TF's
reassembly, each ``--batch-size`` chunk being one upstream call (batch-mean centring is per call).
A progress bar is shown on a terminal only, and never with ``PTYCHO_BRIDGE_NO_PROGRESS=1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import click
import numpy as np

from ptycho_bridge.cli.util import guarded, no_verify_option
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.io.atomic import atomic_write, refuse_existing, resolve_output
from ptycho_bridge.ops.engines import ENGINE_NAMES
from ptycho_bridge.ops.parity import archive_under_test, load_input
from ptycho_bridge.ops.run import plan_run, run_archive

NO_PROGRESS_ENV = "PTYCHO_BRIDGE_NO_PROGRESS"


def show_progress() -> bool:
    """Progress only for a person watching: stderr is a terminal and the env switch is not set."""
    return sys.stderr.isatty() and os.environ.get(NO_PROGRESS_ENV, "") not in ("1", "true", "yes")


def _with_progress(chunks: Iterator[np.ndarray], total: int, label: str) -> Iterator[np.ndarray]:
    if not show_progress():
        yield from chunks
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total)
        for chunk in chunks:
            yield chunk
            progress.advance(task, len(chunk))


@click.command("run")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Input .npz: 'amplitude' [B,C,N,N] or an upstream golden.npz.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output .npz.")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="onnx", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--model", default="diffraction_to_obj", show_default=True, help="Which model of the archive.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@no_verify_option
@guarded
def command(archive: Path, input_path: Path, out: Path, engine: str, batch_size: int, model: str, force: bool, no_verify: bool) -> None:
    """Run ARCHIVE's network on --input with one engine; write the object to OUT."""
    target = resolve_output(out, "output.npz")
    refuse_existing(target, force=force)
    aut = archive_under_test(archive, model=model, verify=not no_verify)
    inp = load_input(input_path, aut.archive, aut.spec)
    try:
        plan = plan_run(aut, inp, batch_size)
    except ConversionRefused as exc:
        raise click.BadParameter(exc.reason, param_hint="--batch-size") from None
    result = run_archive(aut, inp, engine, plan,
                         progress=lambda chunks: _with_progress(chunks, len(inp.x_norm), f"{engine} {archive.name}"))
    with atomic_write(target, force=force) as fh:
        np.savez(fh, **result)
    click.echo(str(target))
