"""``ptycho-bridge run``: run an archive's network on a batch of diffraction patterns, any engine.

Input ``.npz``: ``amplitude`` (canonical ``x_norm`` float32 ``[B, C, N, N]``, optional
``positions``) or an upstream fixture ``golden.npz`` (converted with
:func:`ptycho_bridge.spec.conventions.golden_canonical_input`, see :func:`ptycho_bridge.ops.parity.load_input`).
Output ``.npz``: ``object`` complex64 ``[B, Cout, N, N]`` and, when positions are given and the
network is ``object_big`` with a known ``padded_size``, ``trimmed_object`` ``[B, N, N, 1]`` — TF's
reassembly, each ``--batch-size`` chunk being one upstream call (batch-mean centring is per call).
A progress bar is shown on a terminal only, and never with ``PTYCHO_BRIDGE_NO_PROGRESS=1``. After
writing, a short summary (output path, engine, time, each key with its shape and dtype) goes to stdout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.cli.progress import NO_PROGRESS_ENV, show_progress, track
from ptycho_bridge.cli.util import guarded, no_verify_option
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.io.atomic import atomic_write, refuse_existing, resolve_output
from ptycho_bridge.ops.engines import ENGINE_EXTRAS, ENGINE_NAMES, engine_module
from ptycho_bridge.ops.extras import MissingDependency, missing_packages
from ptycho_bridge.ops.plots import Panel, require_plotting, save_figure
from ptycho_bridge.ops.parity import archive_under_test, load_input
from ptycho_bridge.ops.run import plan_run, run_archive

@click.command("run")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Input .npz: 'amplitude' [B,C,N,N] or an upstream golden.npz.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output .npz.")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="onnx", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--model", default="diffraction_to_obj", show_default=True, help="Which model of the archive.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG: amplitude and phase of the first object (the reassembled one when written), and "
                   "|difference| maps against the input's expected output when it has one (needs matplotlib: the "
                   "'reconstruct' extra). An existing file is replaced.")
@no_verify_option
@guarded
def command(archive: Path, input_path: Path, out: Path, engine: str, batch_size: int, model: str, force: bool,
            plot_path: Path | None, no_verify: bool) -> None:
    """Run ARCHIVE's network on --input with one engine; write the object to OUT.

    \b
    OUT (.npz) holds:
      object          complex64 [B, Cout, N, N]  the per-patch object, canonical layout
      trimmed_object  complex64 [B, N, N, 1]     TF's reassembly, written when --input has positions
                                                 and the network is object_big with a known padded_size
    """
    target = resolve_output(out, "output.npz")
    refuse_existing(target, force=force)
    missing = missing_packages(engine_module(engine).REQUIRES)
    if missing:  # before reading anything: say what to install
        raise MissingDependency(f"--engine {engine}", missing, ENGINE_EXTRAS[engine])
    if plot_path is not None:
        require_plotting()
    aut = archive_under_test(archive, model=model, verify=not no_verify)
    inp = load_input(input_path, aut.archive, aut.spec)
    try:
        plan = plan_run(aut, inp, batch_size)
    except ConversionRefused as exc:
        raise click.BadParameter(exc.reason, param_hint="--batch-size") from None
    t0 = time.perf_counter()
    result = run_archive(aut, inp, engine, plan,
                         progress=lambda chunks: track(chunks, total=len(inp.x_norm), label=f"{engine} {archive.name}",
                                                       weight=len))
    seconds = time.perf_counter() - t0
    with atomic_write(target, force=force) as fh:
        np.savez(fh, **result)
    click.echo(f"wrote {target}: {len(inp.x_norm)} pattern(s) through {engine} in {seconds:.2f} s")
    for key, value in result.items():
        click.echo(f"  {key:<15} {value.dtype} {list(value.shape)}")
    if plot_path is not None:
        _plot(plot_path, result, inp, archive, engine)


def _plot(path: Path, result: dict[str, Any], inp: Any, archive: Path, engine: str) -> None:
    """First sample: the reassembled object when written (compared with a trimmed golden), else patch 0."""
    expected = inp.expected
    if "trimmed_object" in result and len(result["trimmed_object"]):
        obj = result["trimmed_object"][0, :, :, 0]
        ref = expected[0, :, :, 0] if expected is not None and expected.ndim == 4 and expected.shape[-1] == 1 else None
        title = f"{engine}: trimmed_object[0]"
    else:
        obj = result["object"][0, 0]
        ref = expected[0, 0] if expected is not None and expected.shape[1:] == result["object"].shape[1:] else None
        title = f"{engine}: object[0][0]"
    panel = Panel(title + (" vs golden" if ref is not None else ""), ref if ref is not None else obj,
                  obj if ref is not None else None)
    save_figure(path, [panel], title=f"run: {archive.name}", force=True)
    click.echo(f"plot: {path}", err=True)


__all__ = ["NO_PROGRESS_ENV", "command", "show_progress"]
