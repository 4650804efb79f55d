"""``reconstruct``: archive + scan dataset -> stitched complex object, upstream's TF inference semantics.

Stages (each timed):

1. ``open``      read the archive (:mod:`.modelinfo`) and validate the dataset headers and small arrays;
2. ``group``     upstream's subsample / grouping / offsets (:mod:`grouping`);
3. ``normalise`` pass 1 over the distinct grouped patterns: energies, finiteness, ``s`` (:mod:`normalise`);
4. per block of groups (pass 2, :func:`block_task`): ``read`` patterns -> ``model`` (X_full, canonical x_norm,
   engine in batches of ``batch_size``) -> ``merge`` (upstream's per-group reassembly + trim, :mod:`.merge`, in
   chunks of ``centring_batch`` = 32 groups aligned on multiples of 32 in group order, because upstream's Keras
   ``predict`` batch of 32 centres local offsets over the batch) -> ``stitch`` into the block's canvas window;
5. ``reduce``   windows summed along the fixed tree over the block index, then divided once (:mod:`.stitch`).

The block partition (:func:`block_partition`: ``block_groups`` rounded up to a multiple of ``centring_batch``)
depends on neither ``batch_size`` nor the worker count, and the in-process loop runs the same block task and
the same tree reduction as the Dask driver (:mod:`.distributed`, ``client=``): every way of running gives the
same bits.

Differences from upstream, on purpose: every group keeps its own output (upstream's batch collapse for
B·C >= 64 per predict batch is not reproduced); the engine batch size is free (only ``centring_batch``
decides the merge chunks; ``centring_batch=1`` centres each group on itself); float32 coordinates are
accepted (upstream asserts float64); unseeded subsampling draws and reports a seed.
Memory: a block holds ``block_groups`` groups (rounded up to a multiple of ``centring_batch``); nothing holds
all patterns or all patches.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveError, OptionError
from ptycho_bridge.ops.graph_cache import enabled_by_env
from ptycho_bridge.ops.reconstruct.blocks import (  # build_runner stays importable from here too
    BlockContext,
    EngineArg,
    Timer,
    add_seconds,
    block_partition,
    block_size,
    block_task,
    build_runner,
    check_engine_name,
)
from ptycho_bridge.ops.reconstruct.dataset import named, open_dataset
from ptycho_bridge.ops.reconstruct.distributed import Driver, WorkerJob, scan_fingerprint
from ptycho_bridge.ops.reconstruct.grouping import make_groups
from ptycho_bridge.ops.reconstruct.modelinfo import ModelInfo, open_model
from ptycho_bridge.ops.reconstruct.normalise import grouped_energies, norm_scale, pattern_energies
from ptycho_bridge.ops.reconstruct.stitch import DEFAULT_MAX_CANVAS, TreeReducer, finalise, plan_canvas

UPSTREAM_PREDICT_BATCH = 32
DEFAULT_BLOCK_GROUPS = 256  # groups per block task: the unit of work on a cluster and of the reduction tree
Progress = Callable[[str, int, int], None]


@dataclass
class ReconstructionResult:
    """The stitched object and everything needed to explain it."""

    object: np.ndarray  # complex64 (P, P)
    amplitude: np.ndarray  # float32 (P, P)
    phase: np.ndarray  # float32 (P, P)
    groups: np.ndarray  # (B, C) file indices
    global_offsets: np.ndarray  # (B, 2) float64 [x, y]
    local_offsets: np.ndarray  # (B, C, 2) float64 [x, y] (sign: -(coords - group mean))
    norm_scale: float
    intensity_scale: float
    timings: dict[str, float]
    canvas: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    object_guess: np.ndarray | None = None  # the dataset's objectGuess (complex64), when present


def reconstruct(
    archive: str | Path | ModelInfo,
    dataset: str | Path,
    engine: EngineArg = "onnx",
    *,
    n_groups: int | None = None,
    subsample: int | None = None,
    subsample_seed: int | None = None,
    batch_size: int = 64,
    crop: int = 20,
    keys: Mapping[str, str] | None = None,
    centring_batch: int = UPSTREAM_PREDICT_BATCH,
    max_canvas: int = DEFAULT_MAX_CANVAS,
    threads: int | None = None,
    read_chunk: int = 1024,
    block_groups: int = DEFAULT_BLOCK_GROUPS,
    cache: bool = True,
    require_probe: bool = True,
    spool_dir: str | None = None,
    with_object_guess: bool = False,
    progress: Progress | None = None,
    inspect: Callable[[dict[str, Any]], None] | None = None,
    client: Any = None,
) -> ReconstructionResult:
    """Reconstruct the object of ``dataset`` with the inference model of ``archive``.

    ``engine``: "onnx" | "torch" | "keras", or a callable ``x_norm [B,C,N,N] -> complex64 [B,Cout,N,N]``.
    ``n_groups`` = upstream's nsamples (default: all patterns for gridsize 1, M // C groups otherwise);
    ``subsample``/``subsample_seed`` = upstream's ``--n_subsample``/``--subsample_seed``.
    ``progress(stage, done, total)`` is called per chunk ("normalise": patterns, "reconstruct": groups).
    ``cache=False`` builds the ONNX graph afresh instead of using the graph cache (on a cluster: on every
    worker, as does ``PTYCHO_BRIDGE_NO_CACHE`` set here; ``info["cache"]`` is then the first worker's report).
    ``inspect`` (tests): called per merge chunk with its group range, X_full, x_norm, raw and merged patches.
    ``block_groups``: groups per block task (rounded up to a multiple of ``centring_batch``); it fixes the
    reduction tree, so it is a choice that changes the last bits, unlike ``batch_size``.
    ``client``: a ``distributed.Client``: pass 1 and the block tasks run on its workers (:mod:`.distributed`),
    which open the archive and the dataset by path; the result is the one-process result, bit for bit.
    Raises the project's errors (``FormatError`` naming the dataset key, ``OptionError``, ``EngineUnavailable``).
    """
    for name, value in (("--batch-size", batch_size), ("centring_batch", centring_batch), ("read_chunk", read_chunk),
                        ("block_groups", block_groups)):
        if value < 1:
            raise OptionError(f"must be >= 1, got {value}", option=name)
    if max_canvas < crop:
        raise OptionError(f"must be at least the crop ({crop}), got {max_canvas}", option="--max-canvas")
    if client is not None and not isinstance(engine, str):
        raise OptionError("a cluster run needs an engine name (workers build their own engine)", option="--engine")
    if client is not None and inspect is not None:
        raise OptionError("inspect runs in-process only", option="inspect")
    if isinstance(engine, str):  # before any work (build_runner checks again for its direct callers)
        check_engine_name(engine)
    tm = Timer()
    t = time.perf_counter()
    info = archive if isinstance(archive, ModelInfo) else open_model(archive)
    ds = open_dataset(str(dataset), info.N, keys=keys, require_probe=require_probe, spool_dir=spool_dir)
    notes = list(ds.notes)
    key = ds.keys_used["diffraction"]
    try:
        t = tm.add("open", t)
        g = make_groups(ds.x, ds.y, info.channels, n_groups=n_groups, subsample=subsample,
                        subsample_seed=subsample_seed)
        notes += g.notes
        try:  # the canvas bound is checked before any pattern is read or any canvas allocated
            plan = plan_canvas(g.coords_offsets, crop, max_canvas)
        except ArchiveError as exc:
            raise named(exc, str(dataset)) from None
        t = tm.add("group", t)

        driver = None
        run: Any = None  # the one-process runner (its ``cache`` report goes into the result)
        if client is not None:
            job = WorkerJob(archive=os.path.abspath(info.path), archive_sha256=info.sha256, engine=str(engine),
                            threads=threads, dataset=os.path.abspath(ds.path), N=info.N,
                            keys=dict(keys) if keys else None, require_probe=require_probe, spool_dir=spool_dir,
                            fingerprint=scan_fingerprint(ds), read_chunk=read_chunk,
                            cache=cache and enabled_by_env())  # the client's choice, whatever the workers' env
            driver = Driver(client, job)
            driver.check_workers()
            t = tm.add("workers", t)
        try:
            norm_progress = (lambda d, n: progress("normalise", d, n)) if progress else None
            if driver is not None:
                energies = driver.pattern_energies(g.groups.ravel(), progress=norm_progress)
            else:
                energies = pattern_energies(ds.patterns, g.groups.ravel(), chunk=read_chunk, key=key,
                                            progress=norm_progress)
            s = norm_scale(grouped_energies(energies, g.groups), info.N)
        except ArchiveError as exc:
            raise named(exc, str(dataset)) from None
        t = tm.add("normalise", t)

        B = g.groups.shape[0]
        ctx = BlockContext(N=info.N, backend=info.backend, intensity_scale=info.intensity_scale,
                           padded_size=info.padded_size, object_big=bool(info.spec.object_big),
                           centre=info.reassembly_centring, s=float(s), batch_size=batch_size,
                           centring_batch=centring_batch, plan=plan)
        blocks = block_partition(B, block_groups, centring_batch)
        if driver is not None:
            window = driver.run_blocks(ctx, blocks, g, progress=progress)  # worker seconds: driver.report()
            t = tm.add("blocks", t)
        else:
            run = build_runner(engine, info, threads, cache=cache)
            t = tm.add("engine_build", t)
            reducer = TreeReducer()
            for b0, b1 in blocks:
                win, secs = block_task(ctx, ds.patterns, run, g.groups[b0:b1], g.coords_relative[b0:b1],
                                       g.coords_offsets[b0:b1], start=b0, inspect=inspect)
                add_seconds(tm.t, secs)
                t = time.perf_counter()
                reducer.push(win)
                t = tm.add("reduce", t)
                if progress:
                    progress("reconstruct", b1, B)
            window = reducer.result()
            t = tm.add("reduce", t)
        obj = finalise(plan, window)
        amp, phase = np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)
        t = tm.add("reduce", t)
        guess = ds.object_guess() if with_object_guess else None
    finally:
        ds.close()
    timings = dict(tm.t)
    timings["total"] = sum(timings.values())
    # the four coarse stages: read (open + pass 1 + pass-2 reads), group, model (build + run + merge), stitch
    timings["stage_read"] = timings.get("open", 0.0) + timings.get("normalise", 0.0) + timings.get("read", 0.0)
    timings["stage_group"] = timings.get("group", 0.0)
    timings["stage_model"] = (timings.get("engine_build", 0.0) + timings.get("model", 0.0) + timings.get("merge", 0.0)
                              + timings.get("blocks", 0.0))  # blocks: a cluster run's pass 2 (wall)
    timings["stage_stitch"] = timings.get("stitch", 0.0) + timings.get("reduce", 0.0)
    centring = (f"per {centring_batch}-group predict batch (upstream's Keras predict)" if info.reassembly_centring
                else "none (the archive's era did not centre)")
    return ReconstructionResult(
        object=obj, amplitude=amp, phase=phase, groups=g.groups, global_offsets=g.global_offsets,
        local_offsets=g.local_offsets, norm_scale=float(s), intensity_scale=info.intensity_scale, timings=timings,
        canvas={"size": plan.size, "pad": plan.pad, "crop": plan.crop, "com_xy": [float(v) for v in plan.com],
                "max_canvas": max_canvas},
        info={"archive": str(info.path), "archive_sha256": info.sha256, "backend": info.backend, "N": info.N,
              "gridsize": info.gridsize, "padded_size": info.padded_size,
              "padded_size_source": info.padded_size_source, "reassembly_centring": info.reassembly_centring,
              "centring": centring, "engine": engine if isinstance(engine, str) else "callable",
              "dataset": str(dataset), "dataset_format": ds.format, "keys_used": dict(ds.keys_used),
              "n_patterns_file": ds.count, "n_groups": int(B), "n_groups_requested": n_groups,
              "subsample": subsample, "subsample_seed": g.subsample_seed,
              "centring_batch": centring_batch, "batch_size": batch_size, "patterns": ds.patterns.description,
              "block_groups": block_size(block_groups, centring_batch),
              "blocks": len(blocks),
              "distributed": driver.report() if driver is not None else None,
              "cache": driver.cache if driver is not None else getattr(run, "cache", None)},
        notes=notes, object_guess=guess,
    )
