"""Many archives at once for ``inspect`` and ``validate``: expand folders, fan out to a process pool,
stream results back in input order.

Why a process pool: reading an archive is CPU-bound Python (safe pickle decoding, HDF5 metadata
walks, JSON-Schema validation) under the GIL, so threads would not overlap; forked workers inherit
the parent's imports, so each archive costs only its own reading. Why input order: output is a
deterministic function of the command line (diffable, testable), and ``Executor.map`` still streams
each result as soon as every earlier one is done.

Workers never raise for a bad archive: an inspect failure comes back as its one-line message, a
validate failure is the report itself (``valid: false``).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import click

from ptycho_bridge.errors import BridgeError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.ops.report import inspect_report, validate_path

# what a folder contributes: ``wts.h5.zip`` and any other zip, and Lightning checkpoints
ARCHIVE_SUFFIXES = (".zip", ".ckpt")

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """The CPUs this process may run on (affinity-aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def expand(paths: Iterable[Path], recursive: bool) -> list[Path]:
    """Files as given. A model folder (one holding ``wts.h5.zip``, upstream's layout) stands for that
    archive, as it always has; any other folder becomes its ``*.zip`` / ``*.ckpt`` files (sorted; every
    level with ``recursive``, model folders included). A folder holding none stays itself, so reading it
    fails with the usual message."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir() or (not recursive and (p / "wts.h5.zip").is_file()):
            out.append(p)
            continue
        found = sorted(q for q in (p.rglob("*") if recursive else p.iterdir())
                       if q.suffix in ARCHIVE_SUFFIXES and q.is_file())
        out.extend(found or [p])
    return out


def resolve_single(given: tuple[Path, ...], paths: list[Path]) -> Path | None:
    """The one archive of a one-archive command line, spelled as the user gave it (so the report's
    ``path`` is unchanged: a folder argument still reports the folder); ``None`` for a batch."""
    if len(paths) != 1:
        return None
    if len(given) == 1 and (not given[0].is_dir() or paths[0].name == "wts.h5.zip"):
        return given[0]
    return paths[0]


def imap(fn: Callable[[T], R], items: list[T], jobs: int) -> Iterator[R]:
    """``fn`` over ``items`` in order: in this process for ``jobs == 1`` (or one item), else in a pool
    of ``jobs`` forked workers, results yielded as soon as they (and all before them) are ready."""
    if jobs <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    # imported here: a one-archive command never starts a pool and need not pay ~10 ms for these
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork") if "fork" in methods else None
    workers = min(jobs, len(items))
    chunk = max(1, min(8, len(items) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(fn, items, chunksize=chunk)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, (MemoryError, RecursionError)):
        return f"resource limit hit while reading input ({exc.__class__.__name__})"
    return str(exc)


def inspect_one(path: Path, tensors: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """(report, None) or (None, the error line's message) — never raises for a bad archive."""
    try:
        return inspect_report(read_archive(path, verify=False, lazy_arrays=True), tensors=tensors), None
    except (BridgeError, MemoryError, RecursionError) as exc:
        return None, _failure(exc)


def validate_one(path: Path) -> dict[str, Any]:
    """``validate_path``, with a resource-limit failure turned into an invalid report."""
    try:
        return validate_path(path)
    except (MemoryError, RecursionError) as exc:
        return {"path": str(path), "era": None, "valid": False,
                "checks": [{"check": "container", "ok": False, "detail": _failure(exc)}],
                "errors": [_failure(exc)], "warnings": [], "notes": []}


def inspect_many(paths: list[Path], *, tensors: bool, jobs: int) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    for path, (report, error) in zip(paths, imap(functools.partial(inspect_one, tensors=tensors), paths, jobs)):
        yield path, report, error


def emit_line(doc: Any) -> None:
    """One compact JSON document on one line of stdout, flushed (``--jsonl``)."""
    click.echo(json.dumps(doc, separators=(",", ":"), default=_plain))


def _plain(o: Any) -> Any:
    item = getattr(o, "item", None)  # numpy scalars, without importing numpy here
    return item() if callable(item) else str(o)


def verdict(good: int, bad: int, words: tuple[str, str]) -> None:
    """``N valid, M invalid`` / ``N read, M failed`` on stderr."""
    click.echo(f"{good} {words[0]}, {bad} {words[1]}", err=True)


JOBS_HELP = "Archives read in parallel (worker processes; default: the CPUs available, 1 = in this process)."
RECURSIVE_HELP = "Look for *.zip / *.ckpt archives in every subfolder of a FOLDER argument."
