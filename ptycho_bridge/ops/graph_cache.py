"""The ONNX graph cache: the exported graph of a model, kept per content in the user's cache folder.

Why: building the ONNX graph (importing ``onnx``, emitting ~100 nodes, ``onnx.checker``) costs more than
reconstructing a 100-pattern scan (about 0.6 s of a 2 s run on 2 cores, most of it ``import onnx``); the
graph depends only on the network and its weights, so a second run of the same archive reads the bytes
back and hands them to ONNX Runtime without importing ``onnx`` at all.

Key: sha256 over the ptycho-bridge version, the graph builder's source files, the graph builder's options (opset, no reassembly stage), the
spec's JSON and every canonical tensor (name, dtype, shape, bytes) — the content the graph is built from,
so two archives with the same weights share an entry and a changed tensor never hits a stale one.

Entry: ``<key>.onnx`` and ``<key>.json`` (the sidecar: key, version, size and sha256 of the ``.onnx``,
written *after* it, so a sidecar means a complete graph). Before use the bytes are checked against the
sidecar (size bound first, then sha256); any mismatch, an unreadable or oversized entry, is a miss: the
graph is rebuilt and the entry rewritten. The check catches corruption and partial writes, not someone
who can write the user's cache folder (they could rewrite both files); the bytes only ever reach ONNX
Runtime's protobuf parser, never an unpickler. Files are written temp file -> rename into a folder created
private (0700); the folder is pruned to :data:`MAX_ENTRIES` entries (oldest first) and cleared of an interrupted
write's leftovers after :data:`STALE_S`. A folder that cannot be written never fails a run (status ``unwritable``).

Where: ``$PTYCHO_BRIDGE_CACHE_DIR`` if set, else the platform's cache folder (``$XDG_CACHE_HOME`` or
``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows) + ``ptycho-bridge``;
graphs live in its ``onnx-graphs/`` subfolder. ``PTYCHO_BRIDGE_NO_CACHE=1`` or ``--no-cache`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge import __version__
from ptycho_bridge.io.atomic import atomic_write
from ptycho_bridge.spec.network import NetworkSpec

ENV_DIR = "PTYCHO_BRIDGE_CACHE_DIR"
ENV_OFF = "PTYCHO_BRIDGE_NO_CACHE"
SUBDIR = "onnx-graphs"
MAX_ENTRIES = 32
# a graph is its weights (float32) plus a few hundred nodes: bound what is read back by the tensors' size
GRAPH_OVERHEAD = 16 << 20
SIDECAR_MAX = 64 << 10
STALE_S = 3600.0  # a temp file or sidecar-less graph this old is a leftover of an interrupted write


@dataclass
class CacheReport:
    """What the cache did for one engine build (``reconstruct.json``'s ``cache`` key)."""

    status: str  # "hit" | "miss" (built and stored) | "rebuilt" (entry failed its check) | "off" | "unwritable"
    path: str | None  # the entry's .onnx file (None when off)
    key: str | None
    reason: str | None = None  # why a hit did not happen (missing, checksum mismatch, …)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_dir() -> Path:
    """The platform's per-user cache folder for ptycho-bridge (``$PTYCHO_BRIDGE_CACHE_DIR`` wins)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "ptycho-bridge" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ptycho-bridge"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "ptycho-bridge"


def enabled_by_env() -> bool:
    """False when ``PTYCHO_BRIDGE_NO_CACHE`` is set to anything but ``""``/``0``."""
    return os.environ.get(ENV_OFF, "") in ("", "0")


_BUILDER_MODULES = ("export.py", "network.py", "graph.py", "layout.py", "reassembly.py")


def builder_fingerprint() -> str:
    """sha256 of the graph builder's own source (``converters/onnx``): a development checkout whose exporter
    changed without a version bump must not hit graphs the old exporter built. Files that cannot be read (a
    zipped install) count as empty; the version still keys the entry then."""
    h = hashlib.sha256()
    folder = Path(__file__).resolve().parents[2] / "converters" / "onnx"  # installed beside ptycho_bridge
    for name in _BUILDER_MODULES:
        try:
            h.update((folder / name).read_bytes())
        except OSError:
            pass
    return h.hexdigest()


def graph_key(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], options: Mapping[str, Any]) -> str:
    """sha256 (hex) of everything the graph is built from: version, builder source, options, spec JSON, tensors."""
    h = hashlib.sha256()
    head = {"version": __version__, "builder": builder_fingerprint(), "options": dict(options),
            "spec": spec.to_dict()}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.data)  # the bytes in place (C-contiguous), no copy
    return h.hexdigest()


def _read_bounded(path: Path, limit: int) -> bytes | None:
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def lookup(folder: Path, key: str, max_bytes: int) -> tuple[bytes | None, str]:
    """The verified graph bytes of ``key`` (or ``None``) and, for a miss, why."""
    graph, side = folder / f"{key}.onnx", folder / f"{key}.json"
    if not side.is_file() or not graph.is_file():
        return None, "not cached"
    try:
        raw = _read_bounded(side, SIDECAR_MAX)
        meta = json.loads(raw) if raw is not None else None
        if not isinstance(meta, dict) or meta.get("key") != key or not isinstance(meta.get("size"), int):
            return None, "sidecar unreadable or for another key"
        if meta["size"] > max_bytes:
            return None, f"entry larger than the bound ({meta['size']} > {max_bytes} bytes)"
        data = _read_bounded(graph, meta["size"])
    except (OSError, ValueError) as exc:
        return None, f"unreadable entry ({type(exc).__name__})"
    if data is None or len(data) != meta["size"]:
        return None, "size differs from the sidecar"
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        return None, "sha256 differs from the sidecar"
    return data, ""


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path, force=True, private=True) as fh:
        fh.write(data)


def store(folder: Path, key: str, data: bytes, meta: Mapping[str, Any]) -> Path:
    """Write ``<key>.onnx`` then its sidecar (each temp file → rename); prune old entries."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # graphs are the user's weights: private by default
    graph = folder / f"{key}.onnx"
    _write_atomic(graph, data)
    side = {**meta, "key": key, "version": __version__, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_atomic(folder / f"{key}.json", json.dumps(side, sort_keys=True).encode())
    prune(folder, keep=key)
    return graph


def prune(folder: Path, keep: str, max_entries: int = MAX_ENTRIES, stale_s: float = STALE_S) -> None:
    """Delete the oldest entries (by sidecar mtime) beyond ``max_entries`` (never ``keep``), and leftovers of
    interrupted writes (``.partial`` temp files, graphs without a sidecar) older than ``stale_s``."""
    try:
        sides = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        old = time.time() - stale_s
        leftovers = [p for p in folder.glob(".*.partial") if p.stat().st_mtime < old]
        leftovers += [p for p in folder.glob("*.onnx")
                      if not p.with_suffix(".json").exists() and p.stat().st_mtime < old]
    except OSError:
        return
    for side in sides[max_entries:]:
        if side.stem == keep:
            continue
        for p in (side, side.with_suffix(".onnx")):
            p.unlink(missing_ok=True)
    for p in leftovers:
        p.unlink(missing_ok=True)


def cached_graph(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], build: Callable[[], bytes], *,
                 options: Mapping[str, Any], enabled: bool = True,
                 folder: str | os.PathLike[str] | None = None) -> tuple[bytes, CacheReport]:
    """The graph's bytes from the cache when a verified entry exists, else ``build()`` (and store it)."""
    if not enabled or not enabled_by_env():
        return build(), CacheReport("off", None, None)
    where = Path(folder) if folder is not None else default_dir() / SUBDIR
    key = graph_key(spec, tensors, options)
    limit = sum(int(np.asarray(t).nbytes) for t in tensors.values()) * 2 + GRAPH_OVERHEAD
    data, why = lookup(where, key, limit)
    path = str(where / f"{key}.onnx")
    if data is not None:
        return data, CacheReport("hit", path, key)
    data = build()
    try:
        store(where, key, data, {"options": dict(options), "family": spec.family, "N": spec.N})
    except OSError as exc:  # a read-only or full cache folder never fails the run
        return data, CacheReport("unwritable", path, key, f"{why}; not stored: {exc.strerror or exc}")
    return data, CacheReport("miss" if why == "not cached" else "rebuilt", path, key, why)


# options the reconstruct engine builds its graph with (part of the key: a change means another entry)
ONNX_OPTIONS: dict[str, Any] = {"engine": "onnx", "reassembly": False, "opset": "default"}


class Runner:
    """A built engine's ``run`` plus what the graph cache did (``runner.cache``), callable like ``run``."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], cache: dict[str, Any] | None) -> None:
        self.run = run
        self.cache = cache

    def __call__(self, x_norm: np.ndarray) -> np.ndarray:
        return self.run(x_norm)


def onnx_graph_source(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, enabled: bool = True,
                      folder: str | os.PathLike[str] | None = None
                      ) -> tuple[Callable[[Callable[[], bytes]], bytes], CacheReport]:
    """A ``graph_source`` for the ONNX engine's ``build`` and the report it fills in when called."""
    report = CacheReport("off", None, None)

    def source(build: Callable[[], bytes]) -> bytes:
        data, got = cached_graph(spec, tensors, build, options=ONNX_OPTIONS, enabled=enabled, folder=folder)
        report.status, report.path, report.key, report.reason = got.status, got.path, got.key, got.reason
        return data

    return source, report
