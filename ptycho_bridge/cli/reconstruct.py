"""``ptycho-bridge reconstruct``: a whole scan through a model archive, stitched into one object image.

The command is a thin shell over :func:`ptycho_bridge.ops.reconstruct.pipeline.reconstruct` and
:mod:`ptycho_bridge.ops.reconstruct.outputs`. Order matters for the "nothing written on bad input"
rule: the extra's packages are checked first (one ``error:`` line naming the pip command), then
``OUTDIR`` (must not exist without ``--force``), then the archive and dataset are validated by the
pipeline before any work; the output folder is built aside and renamed at the end. ``--compare``
writes the outputs, then exits 1 when the objects differ beyond parity's tolerance. ``--scheduler`` /
``--workers`` (the ``distributed`` extra) run the same pipeline on a Dask cluster
(:mod:`ptycho_bridge.ops.reconstruct.distributed`); the dashboard link (if any) goes to stderr. Image-quality figures
(``quality``: SSIM/PSNR/FRC, :mod:`ptycho_bridge.ops.reconstruct.quality`) are computed against ``--compare``'s
object, else against the dataset's ``objectGuess``, and printed on stderr.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any, Callable

import click

from ptycho_bridge.cli.run import show_progress
from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.errors import BridgeError
from ptycho_bridge.io.atomic import atomic_write, refuse_existing
from ptycho_bridge.ops.engines import ENGINE_NAMES
from ptycho_bridge.ops.extras import EXTRAS, missing_packages, pip_hint, require
from ptycho_bridge.ops.plots import require_plotting
from ptycho_bridge.ops.reconstruct.compare import compare_objects, quality_for
from ptycho_bridge.ops.reconstruct.dataset import CANONICAL
from ptycho_bridge.ops.reconstruct.distributed import cluster_client, dashboard_link, local_threads
from ptycho_bridge.ops.reconstruct.outputs import (
    build_report,
    parse_formats,
    refuse_existing_dir,
    save_difference_plot,
    write_outputs,
)
from ptycho_bridge.ops.reconstruct.pipeline import reconstruct
from ptycho_bridge.ops.reconstruct.quality import summary
from ptycho_bridge.ops.reconstruct.stitch import DEFAULT_MAX_CANVAS

# the extra's packages but matplotlib, which only --plot needs (the PNGs are drawn by ops/reconstruct/png.py)
EXTRA_PACKAGES = tuple(p for p in EXTRAS["reconstruct"] if p != "matplotlib")


def check_extra() -> None:
    """The ``reconstruct`` extra must be installed; one message naming what is missing and the fix."""
    missing = missing_packages(EXTRA_PACKAGES)
    if missing:
        raise BridgeError(f"reconstruct needs {', '.join(missing)} (not installed); "
                          f"install them with: {pip_hint('reconstruct')}")


def parse_keys(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("diffraction=entry/data", …)`` → mapping canonical name → key in the dataset file."""
    keys: dict[str, str] = {}
    for pair in pairs:
        name, sep, key = pair.partition("=")
        if not sep or not name or not key:
            raise click.BadParameter(f"expected NAME=DATASETKEY, got {pair!r}", param_hint="--key")
        if name not in CANONICAL:
            raise click.BadParameter(f"unknown name {name!r}; choose from {', '.join(CANONICAL)}", param_hint="--key")
        keys[name] = key
    return keys


class _Bar:
    """A rich progress bar on stderr for people (terminal only, PTYCHO_BRIDGE_NO_PROGRESS=1 turns it off)."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        if not show_progress():
            return None
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=True)
        self.progress.start()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            label = "reading patterns" if stage == "normalise" else "reconstructing groups"
            self.tasks[stage] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[stage], completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


@click.command("reconstruct")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "outdir", required=True, type=click.Path(path_type=Path),
              help="Output folder (must not exist unless --force).")
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default="onnx", show_default=True)
@click.option("--n-groups", type=click.IntRange(min=1), default=None,
              help="Groups to reconstruct (upstream's nsamples; default: every pattern, or M // C for gridsize C).")
@click.option("--subsample", type=click.IntRange(min=1), default=None,
              help="Use M patterns drawn at random (sorted), as upstream's --n_subsample.")
@click.option("--subsample-seed", type=int, default=None, help="Seed of --subsample (drawn and reported if omitted).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Groups per engine call (never changes the result).")
@click.option("--crop", type=click.IntRange(min=2), default=20, show_default=True,
              help="Centre crop M of each patch in the stitch (upstream's reassemble_position M).")
@click.option("--max-canvas", type=click.IntRange(min=2), default=DEFAULT_MAX_CANVAS, show_default=True,
              help="Refuse canvases larger than PX pixels a side.")
@click.option("--format", "formats", default="png,npz", show_default=True,
              help="Comma list of png, npz, tiff (object.npz and the PNGs are always written).")
@click.option("--key", "key_pairs", multiple=True, metavar="NAME=DATASETKEY",
              help="Map a dataset key (e.g. diffraction=entry/data for HDF5); repeatable.")
@click.option("--compare", "compare_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Compare the object with OTHER.npz's 'object' under parity's tolerance; exit 1 beyond it.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --compare: write amplitude/phase difference maps to this PNG.")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Build the ONNX graph afresh instead of using the graph cache (PTYCHO_BRIDGE_CACHE_DIR moves it).")
@click.option("--force", is_flag=True, help="Replace an existing OUTDIR (and --plot file).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (reconstruct.json) on stdout.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on a Dask cluster: the address of its running scheduler (e.g. tcp://host:8786); "
                   "workers read the archive and DATASET by the same paths.")
@click.option("--workers", type=click.IntRange(min=1, max=1024), default=None,
              help="Run on a local Dask cluster of N worker processes started and stopped by this command.")
@guarded
def command(archive: Path, dataset: Path, outdir: Path, engine: str, n_groups: int | None, subsample: int | None,
            subsample_seed: int | None, batch_size: int, crop: int, max_canvas: int, formats: str,
            key_pairs: tuple[str, ...], compare_path: Path | None, plot_path: Path | None, no_cache: bool,
            force: bool, as_json: bool, scheduler: str | None, workers: int | None) -> None:
    """Reconstruct a scan DATASET with ARCHIVE's model and stitch the object image into OUTDIR."""
    check_extra()
    try:
        fmt = parse_formats(formats)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None
    keys = parse_keys(key_pairs)
    if plot_path is not None and compare_path is None:
        raise click.BadParameter("needs --compare", param_hint="--plot")
    if scheduler is not None and workers is not None:
        raise click.BadParameter("give --scheduler or --workers, not both", param_hint="--workers")
    if scheduler is not None or workers is not None:
        require("distributed", "reconstruct --scheduler/--workers")
    if plot_path is not None:
        require_plotting("--plot")
    refuse_existing_dir(outdir, force=force)
    if plot_path is not None:
        refuse_existing(plot_path, force=force)
    t0 = time.perf_counter()
    args: dict[str, Any] = dict(n_groups=n_groups, subsample=subsample, subsample_seed=subsample_seed,
                                batch_size=batch_size, crop=crop, keys=keys or None, max_canvas=max_canvas,
                                with_object_guess=True, cache=not no_cache)
    cluster = scheduler is not None or workers is not None
    with (cluster_client(scheduler, workers) if cluster else contextlib.nullcontext()) as client:
        link = dashboard_link(client) if client is not None else None
        if link is not None:
            click.echo(f"dask dashboard: {link}", err=True)
        threads = local_threads(workers) if workers is not None else None
        with _Bar() as progress:
            result = reconstruct(archive, dataset, engine, progress=progress, client=client, threads=threads, **args)
    if cluster:
        result.info["distributed"]["local_cluster"] = workers is not None
    comparison, plot_png, other = None, None, None
    if compare_path is not None:
        comparison, other = compare_objects(result.object, compare_path)
        comparison["plot"] = None
        if plot_path is not None:  # rendered now, written after OUTDIR (nothing is left if OUTDIR fails)
            buf = io.BytesIO()
            save_difference_plot(buf, result.object, other, compare_path.stem)
            plot_png = buf.getvalue()
            comparison["plot"] = str(plot_path)
    argv = {"n_groups_requested": n_groups, "subsample": subsample, "batch_size": batch_size, "crop": crop,
            "max_canvas": max_canvas, "keys": keys, "block_groups": result.info["block_groups"]}
    quality = quality_for(result.object, other=other, other_path=compare_path, object_guess=result.object_guess,
                          com_xy=result.canvas["com_xy"])
    report = build_report(result, formats=fmt, comparison=comparison, argv=argv, quality=quality)
    write_outputs(outdir, result, report, formats=fmt, force=force)
    if plot_png is not None and plot_path is not None:
        with atomic_write(plot_path, force=force) as fh:
            fh.write(plot_png)
    if as_json:
        emit_json(report)
    groups = result.groups
    click.echo(f"reconstructed {groups.size} patterns in {groups.shape[0]} groups with {result.info['engine']} in "
               f"{time.perf_counter() - t0:.1f} s: {result.canvas['size']}x{result.canvas['size']} px object -> "
               f"{outdir}", err=True)
    if quality is not None:
        click.echo(f"quality vs {quality['reference']['source']}: {summary(quality)}", err=True)
    if comparison is not None and not comparison["ok"]:
        worst = comparison["regions"]["object"]["worst_ratio"]
        raise BridgeError(f"object differs from {compare_path} beyond parity's tolerance "
                          f"(worst |ours - ref|/(atol + rtol*|ref|) = {worst})")
