"""``reconstruct`` on a Dask ``distributed`` cluster: the same block tasks and reduction tree, run by workers.

Why Dask: facilities already run it (``dask-jobqueue`` on Slurm/PBS); it schedules, retries tasks of a lost
worker from their lineage, moves results between workers and serves a dashboard. This module only decides
*what* the tasks are; :func:`ptycho_bridge.ops.reconstruct.pipeline.reconstruct` (``client=``) calls it.

Design (``docs/architecture.md``):

- the client opens the archive (sha256) and the dataset's small arrays, groups, plans the canvas and the
  fixed block partition, exactly as the one-process path does;
- **the scan stays where it is**: every task carries only a :class:`WorkerJob` (paths, sha256, a fingerprint
  of the scan's coordinates) and its block's group indices and offsets; workers open the archive and the
  dataset by path (:func:`open_model`, :func:`open_dataset`) and keep both in a worker-local cache, so the
  engine is built once per archive per worker process (keyed by the sha256 the client verified). A worker
  refuses an archive whose sha256 differs and a dataset whose coordinates differ from the client's;
- pass 1 is a map over chunks of the distinct grouped patterns (per-pattern float64 energies, 8 bytes a
  pattern back to the client), reduced on the client as in one process, so ``s`` is the same float32;
- pass 2 is one task per block (:func:`blocks.block_task`) returning only its canvas window; windows are
  summed by tasks along :func:`stitch.tree_split`'s tree over the block index (the tree
  :class:`stitch.TreeReducer` walks in one process) and the root window is finalised once on the client.

Workers run one task at a time per process (a process lock: PatternSource and engines are not shared across
threads); give each worker one thread and let the engine use ``threads`` cores. ``distributed`` is imported
inside functions: nothing here is imported unless a ``client`` is given.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ArchiveError, BridgeError, ChecksumError, FormatError
from ptycho_bridge.ops.reconstruct.blocks import add_seconds, block_task, build_runner
from ptycho_bridge.ops.reconstruct.dataset import ScanDataset, named, open_dataset
from ptycho_bridge.ops.reconstruct.modelinfo import ModelInfo, file_sha256, open_model
from ptycho_bridge.ops.reconstruct.normalise import pattern_energies
from ptycho_bridge.ops.reconstruct.stitch import CanvasWindow, add_windows, tree_split, window_bounds

PASS1_PATTERNS = 8192  # distinct patterns per pass-1 task
CACHE_SIZE = 2  # engines / open datasets kept per worker process
WINDOW_BYTES_PER_PX = 12  # three float32 planes


class RemoteError(BridgeError):
    """A worker refused or failed a task; the message names the worker (and the file where one is at fault)."""


class WorkerTaskError(Exception):
    """Raised inside a worker with a finished message (positional args only, so it pickles back intact)."""


@dataclass(frozen=True)
class WorkerJob:
    """What every task needs to find its inputs on a worker: paths and the identities the client verified."""

    archive: str
    archive_sha256: str
    engine: str
    threads: int | None
    dataset: str
    N: int
    keys: Mapping[str, str] | None
    require_probe: bool
    spool_dir: str | None
    fingerprint: str  # scan_fingerprint of the dataset the client grouped
    read_chunk: int
    cache: bool  # use the ONNX graph cache (False: --no-cache or PTYCHO_BRIDGE_NO_CACHE on the client)


def scan_fingerprint(ds: ScanDataset) -> str:
    """sha256 of the pattern count and the float64 coordinates: workers must group the scan the client grouped."""
    h = hashlib.sha256(f"{ds.count}:".encode())
    for a in (ds.x, ds.y):
        h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return h.hexdigest()


# -- worker side ------------------------------------------------------------------------------------------
_LOCK = threading.Lock()
_ENGINES: "OrderedDict[tuple[Any, ...], tuple[ModelInfo, Callable[..., Any], float]]" = OrderedDict()
_DATASETS: "OrderedDict[tuple[Any, ...], ScanDataset]" = OrderedDict()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _engine(job: WorkerJob) -> tuple[Callable[..., Any], float]:
    """This process's engine for the job's archive: built once, after the archive's sha256 is checked.

    Keyed by the cache choice too: a ``--no-cache`` run gets an engine built without the graph cache.
    """
    key = (job.archive_sha256, job.engine, job.threads, job.cache)
    if key in _ENGINES:
        _ENGINES.move_to_end(key)
        return _ENGINES[key][1], 0.0
    t0 = time.perf_counter()
    _check_sha(job, file_sha256(job.archive))  # before the read: nothing unverified is parsed
    info = open_model(job.archive)
    _check_sha(job, info.sha256)  # after it (open_model hashes the file again): not swapped meanwhile
    run = build_runner(job.engine, info, job.threads, cache=job.cache)
    _ENGINES[key] = (info, run, time.perf_counter() - t0)
    while len(_ENGINES) > CACHE_SIZE:
        _ENGINES.popitem(last=False)
    return run, time.perf_counter() - t0


def _check_sha(job: WorkerJob, got: str) -> None:
    if got != job.archive_sha256:
        raise ChecksumError(f"sha256 {got} differs from the {job.archive_sha256} the client verified; "
                            "refusing to run it", member=job.archive)


def _dataset(job: WorkerJob) -> ScanDataset:
    """This process's open dataset for the job (validated as on the client, same coordinates)."""
    key = (job.dataset, job.fingerprint, tuple(sorted((job.keys or {}).items())), job.N)
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    ds = open_dataset(job.dataset, job.N, keys=job.keys, require_probe=job.require_probe, spool_dir=job.spool_dir)
    if scan_fingerprint(ds) != job.fingerprint:
        ds.close()
        raise FormatError("this worker reads another pattern count or other coordinates than the client grouped "
                          "(a different file at the same path?)", member=job.dataset)
    _DATASETS[key] = ds
    while len(_DATASETS) > CACHE_SIZE:
        _DATASETS.popitem(last=False)[1].close()
    return ds


def _guard(job: WorkerJob, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` under the process lock; the project's errors and OS errors become one named message."""
    with _LOCK:
        try:
            return fn()
        except BridgeError as exc:
            text = str(exc)
            raise WorkerTaskError(f"worker {_worker_name()}: {text}") from None
        except OSError as exc:
            what = exc.filename or job.dataset
            raise WorkerTaskError(f"worker {_worker_name()} cannot read {what}: "
                                  f"{exc.strerror or exc.__class__.__name__}") from None


def check_task(job: WorkerJob) -> dict[str, Any]:
    """Open the dataset, check the archive and build the engine on this worker; report who, how long and what
    the graph cache did when this worker's engine was built (``None`` for engines without one)."""
    def work() -> dict[str, Any]:
        _dataset(job)
        run, built = _engine(job)
        return {"worker": _worker_name(), "pid": os.getpid(), "engine_build_s": built,
                "cache": getattr(run, "cache", None)}
    return _guard(job, work)


def energies_task(job: WorkerJob, indices: np.ndarray) -> np.ndarray:
    """Pass 1 on a worker: float64 energies of these sorted distinct patterns (as :func:`pattern_energies`)."""
    def work() -> np.ndarray:
        ds = _dataset(job)
        try:
            return pattern_energies(ds.patterns, indices, chunk=job.read_chunk, key=ds.keys_used["diffraction"])
        except BridgeError as exc:
            raise (named(exc, job.dataset) if isinstance(exc, ArchiveError) else exc) from None
    return _guard(job, work)


def block_remote(job: WorkerJob, ctx: Any, start: int, groups: np.ndarray, rel: np.ndarray,
                 off: np.ndarray) -> tuple[CanvasWindow, dict[str, Any]]:
    """Pass 2 on a worker: :func:`blocks.block_task` with this worker's engine and dataset."""
    def work() -> tuple[CanvasWindow, dict[str, Any]]:
        ds = _dataset(job)
        run, built = _engine(job)
        win, secs = block_task(ctx, ds.patterns, run, groups, rel, off, start=start)
        if built:
            secs["engine_build"] = built
        return win, {"seconds": secs, "worker": _worker_name(), "groups": int(groups.shape[0])}
    return _guard(job, work)


def meta_of(leaf: tuple[CanvasWindow, dict[str, Any]]) -> dict[str, Any]:
    """The small half of a block result (what the client gathers for progress and timings)."""
    return leaf[1]


def combine(a: Any, b: Any) -> CanvasWindow:
    """One node of the reduction tree (its children are block results or windows)."""
    wa = a[0] if isinstance(a, tuple) else a
    wb = b[0] if isinstance(b, tuple) else b
    return add_windows(wa, wb)


def root_window(r: Any) -> CanvasWindow:
    return r[0] if isinstance(r, tuple) else r


# -- client side ------------------------------------------------------------------------------------------
@dataclass
class Driver:
    """Runs pass 1 and pass 2 of one reconstruction (``job``) on ``client``'s workers; keeps what the report needs."""

    client: Any
    job: WorkerJob
    stage_seconds: dict[str, float] = field(default_factory=dict)
    worker_seconds: dict[str, float] = field(default_factory=dict)
    bytes_moved: dict[str, int] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    workers_used: set[str] = field(default_factory=set)
    cache: dict[str, Any] | None = None  # the first worker's (by address) graph-cache report
    blocks: int = 0
    pass1_tasks: int = 0
    patterns: int = 0
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # names this run's tasks

    def _result(self, future: Any) -> Any:
        """``future.result()`` with worker refusals as :class:`RemoteError`; others are cancelled on failure."""
        from distributed import KilledWorker

        try:
            return future.result()
        except WorkerTaskError as exc:
            raise RemoteError(str(exc.args[0] if exc.args else exc)) from None
        except KilledWorker as exc:
            raise RemoteError(f"a task kept losing its worker ({exc}); see the scheduler's logs") from None

    def _gather_in_order(self, futures: list[Any]) -> list[Any]:
        try:
            return [self._result(f) for f in futures]
        finally:
            self.client.cancel(futures)

    def check_workers(self) -> None:
        """One check task per worker: dataset readable and identical, archive sha256, engine built."""
        t0 = time.perf_counter()
        try:
            known = self.client.scheduler_info(n_workers=-1)  # newer distributed lists only 5 workers by default
        except TypeError:
            known = self.client.scheduler_info()
        workers = sorted(known["workers"])
        if not workers:
            raise RemoteError(f"the scheduler {self.client.scheduler.address} has no workers")
        futs = [self.client.submit(check_task, self.job, key=f"pb-check-{self.token}-{i}", workers=[w],
                                   allow_other_workers=True, pure=False) for i, w in enumerate(workers)]
        done = self._gather_in_order(futs)
        self.workers = workers
        self.worker_seconds["engine_build"] = sum(d["engine_build_s"] for d in done)
        self.cache = done[0]["cache"]
        self.stage_seconds["check"] = time.perf_counter() - t0

    def pattern_energies(self, indices: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Pass 1 as a map over chunks of the sorted distinct indices; the same array the one-process pass gives."""
        from distributed import as_completed

        t0 = time.perf_counter()
        uniq = np.unique(np.asarray(indices, dtype=np.int64))
        chunks = [uniq[i:i + PASS1_PATTERNS] for i in range(0, uniq.size, PASS1_PATTERNS)]
        futs = [self.client.submit(energies_task, self.job, c, key=f"pb-energy-{self.token}-{i}", pure=False)
                for i, c in enumerate(chunks)]
        self.pass1_tasks = len(futs)
        done = 0
        try:
            if progress is not None:
                for fut in as_completed(futs):
                    if fut.status == "error":
                        break
                    done += int(chunks[futs.index(fut)].size)
                    progress(done, uniq.size)
            parts = self._gather_in_order(futs)  # in index order: the first failing chunk is reported
        finally:
            self.client.cancel(futs)
        self.bytes_moved["pass1_in"] = int(uniq.nbytes)
        self.bytes_moved["pass1_out"] = int(sum(p.nbytes for p in parts))
        self.stage_seconds["normalise"] = time.perf_counter() - t0
        return np.concatenate(parts) if parts else np.empty(0, np.float64)

    def run_blocks(self, ctx: Any, blocks: list[tuple[int, int]], g: Any,
                   progress: Callable[[str, int, int], None] | None = None) -> CanvasWindow:
        """Pass 2: a task per block, the fixed reduction tree as tasks, the root window gathered."""
        from distributed import as_completed

        t0 = time.perf_counter()
        B = int(g.groups.shape[0])
        self.blocks, self.patterns = len(blocks), int(g.groups.size)
        c = self.client
        leaves, bounds, task_in = [], [], 0
        for k, (b0, b1) in enumerate(blocks):
            args = (g.groups[b0:b1], g.coords_relative[b0:b1], g.coords_offsets[b0:b1])
            task_in += sum(int(a.nbytes) for a in args)
            bounds.append(window_bounds(ctx.plan, args[2]))
            leaves.append(c.submit(block_remote, self.job, ctx, b0, *args, key=f"pb-block-{self.token}-{k}",
                                   pure=False))
        metas = [c.submit(meta_of, f, key=f"pb-meta-{self.token}-{k}", pure=False) for k, f in enumerate(leaves)]
        moved = [0]

        def tree(lo: int, hi: int) -> tuple[Any, tuple[int, int, int, int]]:
            if hi - lo == 1:
                return leaves[lo], bounds[lo]
            mid = lo + tree_split(hi - lo)
            (fa, ba), (fb, bb) = tree(lo, mid), tree(mid, hi)
            moved[0] += _area(ba) + _area(bb)  # each child window travels at most once, to its parent
            u = (min(ba[0], bb[0]), max(ba[1], bb[1]), min(ba[2], bb[2]), max(ba[3], bb[3]))
            return c.submit(combine, fa, fb, key=f"pb-sum-{self.token}-{lo}-{hi}", pure=False), u

        root, root_bounds = tree(0, len(blocks))
        if len(blocks) == 1:
            root = c.submit(root_window, root, key=f"pb-root-{self.token}", pure=False)
        del leaves
        try:
            done = 0
            for fut in as_completed(metas):
                meta = self._result(fut)
                done += meta["groups"]
                self.workers_used.add(meta["worker"])
                add_seconds(self.worker_seconds, meta["seconds"])
                if progress is not None:
                    progress("reconstruct", done, B)
            t1 = time.perf_counter()
            window = self._result(root)
            self.stage_seconds["gather"] = time.perf_counter() - t1
        finally:
            c.cancel(metas + [root])
        self.bytes_moved["task_inputs"] = task_in
        self.bytes_moved["windows"] = WINDOW_BYTES_PER_PX * (moved[0] + _area(root_bounds))
        self.stage_seconds["blocks"] = time.perf_counter() - t0
        return window

    def report(self) -> dict[str, Any]:
        """The ``distributed`` key of ``reconstruct.json``."""
        total = sum(self.bytes_moved.values())
        return {
            "scheduler": str(self.client.scheduler.address), "workers": len(self.workers),
            "workers_used": len(self.workers_used), "dashboard": dashboard_link(self.client), "blocks": self.blocks,
            "pass1_tasks": self.pass1_tasks,
            "stage_seconds": {k: round(v, 6) for k, v in self.stage_seconds.items()},
            "worker_seconds": {k: round(v, 6) for k, v in self.worker_seconds.items()},
            "bytes": dict(self.bytes_moved),
            "bytes_per_pattern": round(total / self.patterns, 1) if self.patterns else None,
        }


def dashboard_link(client: Any) -> str | None:
    """The scheduler's dashboard URL, or None where it serves none (``client.dashboard_link`` raises then)."""
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (bokeh absent, KeyError from the scheduler's services)
        return None


def _area(b: tuple[int, int, int, int]) -> int:
    return (b[1] - b[0]) * (b[3] - b[2])


@contextmanager
def cluster_client(scheduler: str | None = None, workers: int | None = None, *, connect_timeout: float = 30.0,
                   wait_for_workers: float = 60.0) -> Iterator[Any]:
    """A ``distributed.Client`` on ``scheduler`` (a running cluster, e.g. dask-jobqueue's) or on a ``LocalCluster``
    of ``workers`` single-threaded processes started here and stopped on exit (whatever happens)."""
    import logging

    from distributed import Client, LocalCluster

    cluster = None
    if workers is not None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.CRITICAL)  # failures come back as one error: line
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise RemoteError(f"cannot connect to the scheduler {scheduler}: {exc}") from None
    try:
        if workers is None:
            try:
                client.wait_for_workers(1, timeout=wait_for_workers)
            except TimeoutError:
                raise RemoteError(f"the scheduler {scheduler} has no workers after {wait_for_workers:.0f} s") from None
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def local_threads(workers: int) -> int:
    """Engine threads per worker of a local cluster: the machine's cores shared out (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
