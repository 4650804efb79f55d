"""One block of groups through the model into its canvas window: the unit of work of ``reconstruct`` (issue 21).

Why a module of its own: the one-process loop (:mod:`.pipeline`) and the Dask workers (:mod:`.distributed`) run
this same code on the same fixed partition, so where a block runs never changes what it returns. The
partition depends on ``block_groups`` and ``centring_batch`` only (never on ``batch_size`` or the worker count).
:func:`build_runner` is the one way both get the engine a block runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import OptionError
from ptycho_bridge.ops.engines import ENGINE_NAMES, load_engine
from ptycho_bridge.ops.graph_cache import Runner, onnx_graph_source
from ptycho_bridge.ops.reconstruct.merge import group_merge
from ptycho_bridge.ops.reconstruct.modelinfo import ModelInfo
from ptycho_bridge.ops.reconstruct.normalise import model_input, x_full
from ptycho_bridge.ops.reconstruct.patterns import PatternSource
from ptycho_bridge.ops.reconstruct.stitch import CanvasPlan, CanvasWindow, Stitcher, window_bounds

MAX_BLOCKS = 10_000_000
EngineArg = Union[str, Callable[[np.ndarray], np.ndarray]]


def check_engine_name(engine: str) -> None:
    """Refuse a name that is not in the engine registry (``--engine``'s choices)."""
    if engine not in ENGINE_NAMES:
        raise OptionError(f"unknown engine {engine!r}; choose from {', '.join(ENGINE_NAMES)}", option="--engine")


def build_runner(engine: EngineArg, info: ModelInfo, threads: int | None, *,
                 cache: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """An engine name from the registry (built once) or a caller's callable, as ``x_norm -> [B,Cout,N,N]``.

    The ONNX engine takes its graph from the graph cache (:mod:`ptycho_bridge.ops.graph_cache`) unless
    ``cache`` is False; what the cache did is the returned runner's ``cache`` attribute (a dict).
    """
    if callable(engine):
        return engine
    check_engine_name(engine)
    if engine != "onnx":
        return load_engine(engine, info.spec, info.tensors, threads=threads).run
    source, report = onnx_graph_source(info.spec, info.tensors, enabled=cache)
    loaded = load_engine(engine, info.spec, info.tensors, threads=threads, options={"graph_source": source})
    return Runner(loaded.run, report.to_dict())


class Timer:
    """Seconds per named step, accumulated."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def add(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.t[name] = self.t.get(name, 0.0) + now - since
        return now


def add_seconds(into: dict[str, float], seconds: Mapping[str, float]) -> None:
    """Add a block's seconds per step (:func:`block_task`'s second result) into a running total per step."""
    for step, value in seconds.items():
        into[step] = into.get(step, 0.0) + value


@dataclass(frozen=True)
class BlockContext:
    """Everything a block task needs besides its groups, the patterns and the engine: small and picklable."""

    N: int
    backend: str
    intensity_scale: float
    padded_size: int
    object_big: bool
    centre: bool
    s: float  # the pass-1 scale, float32 value
    batch_size: int
    centring_batch: int
    plan: CanvasPlan


def block_size(block_groups: int, centring_batch: int) -> int:
    """Groups per block: ``block_groups`` (at least 1) rounded up to a multiple of ``centring_batch``."""
    return int(math.ceil(max(block_groups, 1) / centring_batch) * centring_batch)


def block_partition(n_groups: int, block_groups: int, centring_batch: int) -> list[tuple[int, int]]:
    """Fixed ``[(b0, b1), ...]`` over the groups in blocks of :func:`block_size`.

    Why fixed: the reduction tree is built over these blocks, so they must not depend on the engine batch or
    on how many workers run them; the multiple of ``centring_batch`` keeps the merge chunks where upstream's
    predict batches put them.
    """
    block = block_size(block_groups, centring_batch)
    if math.ceil(n_groups / block) > MAX_BLOCKS:
        raise OptionError(f"{n_groups} groups in blocks of {block} exceed {MAX_BLOCKS} blocks", option="block_groups")
    return [(b0, min(n_groups, b0 + block)) for b0 in range(0, n_groups, block)]


def block_task(ctx: BlockContext, patterns: PatternSource, run: Callable[[np.ndarray], np.ndarray],
               groups: np.ndarray, coords_relative: np.ndarray, coords_offsets: np.ndarray, *, start: int = 0,
               inspect: Callable[[dict[str, Any]], None] | None = None) -> tuple[CanvasWindow, dict[str, float]]:
    """One block of groups -> its canvas window and the seconds spent per step (read, model, merge, stitch).

    Pure in what it returns: the same groups, scale and engine give the same window wherever it runs.
    ``start`` is the block's first group index (merge chunks are aligned on it; ``inspect`` reports it).
    """
    tm = Timer()
    t = time.perf_counter()
    N, cb, bs = ctx.N, ctx.centring_batch, ctx.batch_size
    pats = patterns.take(groups.ravel()).reshape(groups.shape + (N, N))
    t = tm.add("read", t)
    xf = x_full(pats, np.float32(ctx.s))
    xn = model_input(xf, ctx.backend, ctx.intensity_scale)
    raw = np.concatenate([np.asarray(run(xn[i:i + bs])).astype(np.complex64, copy=False)
                          for i in range(0, xn.shape[0], bs)])
    t = tm.add("model", t)
    stitcher = Stitcher(ctx.plan, N, bounds=window_bounds(ctx.plan, coords_offsets))
    t = tm.add("stitch", t)
    for c0 in range(0, groups.shape[0], cb):
        c1 = min(groups.shape[0], c0 + cb)
        merged = group_merge(raw[c0:c1], coords_relative[c0:c1], N=N, padded_size=ctx.padded_size,
                             object_big=ctx.object_big, centre=ctx.centre)
        t = tm.add("merge", t)
        stitcher.add(merged, coords_offsets[c0:c1])
        t = tm.add("stitch", t)
        if inspect is not None:
            inspect({"start": start + c0, "stop": start + c1, "x_full": xf[c0:c1], "x_norm": xn[c0:c1],
                     "raw": raw[c0:c1], "merged": merged})
    return stitcher.window(), tm.t
