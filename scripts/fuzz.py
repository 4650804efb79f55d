#!/usr/bin/env python
"""Mutation fuzzer for the archive readers: real fixture members, mutated, through read_archive + validate.

Each case takes one *target* — a member of a real archive (``manifest.dill``, ``params.dill``, the
``data.pkl`` inside ``model.pth``, ``config.json`` inside ``model.keras``, ``weights.h5`` …) or a
whole archive — applies 1–8 mutations (bit flips, byte overwrites, boundary integers, inserts,
deletes, truncations, splices from the same or another seed), rebuilds the archive around it
(nested zips included, so CRCs stay valid and the parsers behind them are reached), writes it to a
scratch file and runs:

1. ``read_archive(path)`` and then loads every tensor: only ``ArchiveError`` subclasses may escape;
2. ``inspect``'s path, ``read_archive(path, verify=False, lazy_arrays=True)`` and its report (deferred
   arrays, HDF5 metadata read in pure Python): only ``ArchiveError`` subclasses may escape;
3. ``validate_path(path)``: nothing may escape (it reports bad archives, it does not raise).

Anything else — another exception type, a Python-level timeout (20 s) — is a *finding*: deduplicated
by exception type and the innermost ptycho_bridge frame, with the first reproducer saved under
``--findings`` (``<id>/case.zip`` + ``traceback.txt``; re-run one with ``--replay FILE``). A worker
that dies (``crash-*``) or makes no progress for 60 s (``hang-*``: stuck in C code, e.g. libhdf5) is
replaced, and the case it was on is saved.

    python scripts/fuzz.py --seconds 60                  # quick run
    python scripts/fuzz.py --seconds 900 --jobs 2 --seed 7 --findings fuzz-findings
    python scripts/fuzz.py --replay fuzz-findings/<id>/case.zip
    python scripts/fuzz.py --mode scans --cases 20000 --jobs 2 --seed 23   # the scan readers (issue 23)

``--mode scans`` fuzzes the reconstruct scan readers instead: seeds are the bundled sample scan as a stored and a
deflated ``.npz`` and as a contiguous and a chunked (gzip + shuffle + fletcher32) HDF5 file; targets are each whole
file and the ``.npy`` members inside the ``.npz`` files (re-zipped, so CRCs stay valid). A case runs
``open_dataset`` (metadata, small keys), the first pass over every pattern, an out-of-order ``take`` and the
``objectGuess`` read: only ``ArchiveError`` subclasses may escape.

Fixtures come from ``../shared/fixtures/upstream`` (``--fixtures`` to change); the bridge-2 seed is
the bundled sample archive.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing as mp
import pickle  # only to write our own plain-data manifest; nothing is ever unpickled
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from fuzz_mutators import hdf5_metadata, pickle_cost  # noqa: E402  (structure-aware cost mutators, issue 12)

DEFAULT_FIXTURES = REPO.parent / "shared" / "fixtures" / "upstream"
CASE_TIMEOUT_S = 20.0  # Python-level alarm per case
SLOW_S = 10.0  # a case slower than this counts as slow (the "hang" bar)
HANG_S = 60.0  # no new case for this long: the worker is stuck in C code and is replaced
MEMORY_LIMIT = 6 * 1024**3
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]


# ---------------------------------------------------------------------------------------------------
# Seeds and targets
# ---------------------------------------------------------------------------------------------------
def zip_members(data: bytes | Path) -> dict[str, bytes]:
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with zipfile.ZipFile(src) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, method)
    return buf.getvalue()


@dataclass(frozen=True)
class Target:
    """``path`` names the member to mutate: () = the whole archive, (m,) = a member, (m, inner) = inside a nested zip."""

    base: str
    path: tuple[str, ...]
    file_name: str = "wts.h5.zip"

    @property
    def name(self) -> str:
        return f"{self.base}:" + (":".join(self.path) if self.path else "<whole archive>")


def load_bases(fixtures: Path) -> dict[str, dict[str, bytes]]:
    """Member dicts of the base archives (all real, except the bundled bridge-2 sample)."""
    from ptycho_bridge.ops.sample import write_sample

    tf_all = zip_members(fixtures / "tf_N64_gs1" / "wts.h5.zip")
    tf = {k: v for k, v in tf_all.items() if k.startswith("diffraction_to_obj/")}
    # drop the autoencoder (same parsers, a third of the bytes): a plain manifest.dill listing one model
    tf["manifest.dill"] = pickle.dumps({"models": ["diffraction_to_obj"], "version": "1.0"}, protocol=4)
    with tempfile.TemporaryDirectory() as tmp:
        bridge = zip_members(write_sample(Path(tmp) / "sample.zip"))
    bases = {
        "tf": tf,
        "torch": zip_members(fixtures / "torch_N64_gs1" / "wts.h5.zip"),
        "ckpt": zip_members(fixtures / "torch_N64_gs1" / "lightning.ckpt"),
        "bridge": bridge,
    }
    savedmodel = fixtures.parent / "upstream-savedmodel" / "tf215_N64_gs1" / "wts.h5.zip"
    if savedmodel.exists():  # tf-savedmodel-1: the inference model's SavedModel directory only
        sm = {k: v for k, v in zip_members(savedmodel).items() if k.startswith("diffraction_to_obj/")}
        sm["manifest.dill"] = tf["manifest.dill"]
        bases["savedmodel"] = sm
    return bases


def make_targets(bases: dict[str, dict[str, bytes]]) -> list[Target]:
    keras = "diffraction_to_obj/model.keras"
    pth = "diffraction_to_obj/model.pth"
    return [
        Target("torch", ("manifest.dill",)),
        Target("torch", ("diffraction_to_obj/params.dill",)),
        Target("torch", (pth, "model/data.pkl")),
        Target("torch", (pth,)),
        Target("torch", ("autoencoder/model.pth", "model/data.pkl")),
        Target("torch", ("torch_scaling_metadata.pt", "archive/data.pkl")),
        Target("torch", ("torch_scaling_metadata.pt",)),
        Target("torch", ()),
        Target("tf", ("manifest.dill",)),
        Target("tf", ("diffraction_to_obj/params.dill",)),
        Target("tf", ("diffraction_to_obj/custom_objects.dill",)),
        Target("tf", ("diffraction_to_obj/model.h5",)),
        Target("tf", (keras, "config.json")),
        Target("tf", (keras, "model.weights.h5")),
        Target("tf", (keras,)),
        Target("tf", ()),
        Target("ckpt", ("lightning/data.pkl",), "lightning.ckpt"),
        Target("ckpt", (), "lightning.ckpt"),
        Target("bridge", ("manifest.json",)),
        Target("bridge", ("params.json",)),
        Target("bridge", ("diffraction_to_obj/weights.h5",)),
        Target("bridge", ()),
    ] + ([  # the SavedModel era's own parsers: TensorBundle index (SSTable), Keras 2 metadata protobuf
        Target("savedmodel", ("diffraction_to_obj/variables/variables.index",)),
        Target("savedmodel", ("diffraction_to_obj/keras_metadata.pb",)),
        Target("savedmodel", ("diffraction_to_obj/params.dill",)),
    ] if "savedmodel" in bases else [])


def seed_of(bases: dict[str, dict[str, bytes]], target: Target) -> bytes:
    members = bases[target.base]
    if not target.path:
        return zip_bytes(members)
    data = members[target.path[0]]
    if len(target.path) == 2:
        data = zip_members(data)[target.path[1]]
    return data


def rebuild(bases: dict[str, dict[str, bytes]], target: Target, mutated: bytes) -> bytes:
    """The archive bytes with the target replaced by ``mutated`` (nested zips rebuilt, CRCs valid)."""
    if not target.path:
        return mutated
    members = dict(bases[target.base])
    if len(target.path) == 2:
        inner = zip_members(members[target.path[0]])
        inner[target.path[1]] = mutated
        mutated = zip_bytes(inner)
    members[target.path[0]] = mutated
    return zip_bytes(members)


# ---------------------------------------------------------------------------------------------------
# Scan mode (issue 23): the reconstruct dataset readers
# ---------------------------------------------------------------------------------------------------
SCAN_M = 8  # patterns per seed scan: small files, so a case costs milliseconds
SCAN_KEYS = ("diffraction", "xcoords", "ycoords", "probeGuess", "objectGuess")


def load_scan_bases() -> dict[str, bytes]:
    """Seed scans (whole files): the sample scan as stored/deflated .npz and contiguous/chunked HDF5."""
    import h5py
    import numpy as np

    from ptycho_bridge.ops.sample import sample_dataset

    full = sample_dataset()
    d = {k: full[k][:SCAN_M] if k in ("diffraction", "xcoords", "ycoords") else full[k] for k in SCAN_KEYS}
    bases: dict[str, bytes] = {}
    for name, save in (("npz", np.savez), ("npzd", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, **d)
        bases[name] = buf.getvalue()
    for name, kw in (("h5", {}), ("h5c", {"chunks": (2, 64, 64), "compression": "gzip", "shuffle": True,
                                          "fletcher32": True})):
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            for k, v in d.items():
                f.create_dataset(k, data=v, **(kw if k == "diffraction" else {}))
        bases[name] = buf.getvalue()
    return bases


def make_scan_targets() -> list[Target]:
    npz = [Target(b, p, "scan.npz") for b in ("npz", "npzd") for p in ((), ("diffraction.npy",), ("xcoords.npy",),
                                                                          ("probeGuess.npy",))]
    return npz + [Target("h5", (), "scan.h5"), Target("h5c", (), "scan.h5")]


def scan_seed_of(bases: dict[str, bytes], target: Target) -> bytes:
    return zip_members(bases[target.base])[target.path[0]] if target.path else bases[target.base]


def scan_rebuild(bases: dict[str, bytes], target: Target, mutated: bytes) -> bytes:
    if not target.path:
        return mutated
    members = zip_members(bases[target.base])
    members[target.path[0]] = mutated
    return zip_bytes(members, zipfile.ZIP_DEFLATED if target.base == "npzd" else zipfile.ZIP_STORED)


def run_scan_case(path: Path) -> tuple[str, BaseException] | None:
    """None when the scan readers behaved (a dataset, or an ArchiveError); else (stage, exception).

    Warnings are errors here: on the CLI a warning would print a second stderr line beside the ``error:`` line."""
    import numpy as np

    from ptycho_bridge.errors import ArchiveError
    from ptycho_bridge.ops.reconstruct.dataset import open_dataset
    from ptycho_bridge.ops.reconstruct.normalise import pattern_energies

    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = open_dataset(str(path), 64)
            try:
                pattern_energies(ds.patterns, np.arange(ds.count), chunk=3)
                got = ds.patterns.take(np.array([ds.count - 1, 0, 0]))
                if got.shape != (3, 64, 64) or got.dtype != np.float32:
                    return "take", AssertionError(f"take returned {got.dtype}{got.shape}")
                ds.object_guess()
            finally:
                ds.close()
    except ArchiveError:
        pass
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "open_dataset", exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None


# ---------------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------------
def mutate(rng: random.Random, seed: bytes, donors: list[bytes]) -> tuple[bytes, list[str]]:
    if seed[:1] == b"\x80" and rng.random() < 0.3:  # a pickle: sometimes a cost gadget instead of byte edits
        data_, what = pickle_cost(rng, seed)
        return data_, [what]
    if seed[:8] == b"\x89HDF\r\n\x1a\n" and rng.random() < 0.5:  # HDF5: metadata-aware edits
        data_, what = hdf5_metadata(rng, seed)
        return data_, [what]
    data = bytearray(seed)
    log: list[str] = []
    for _ in range(rng.randint(1, 8)):
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 16)))
        op = rng.choice(("flip", "flip", "set", "interesting", "insert", "delete", "truncate", "splice", "donor"))
        # half the edits land in the first 4 KiB: headers, directories and pickles live there
        hi = len(data) - 1 if rng.random() < 0.5 else min(len(data) - 1, 4095)
        pos = rng.randint(0, hi)
        if op == "flip":
            data[pos] ^= 1 << rng.randint(0, 7)
        elif op == "set":
            data[pos] = rng.randint(0, 255)
        elif op == "interesting":
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            data[pos:pos + width] = value.to_bytes(width, rng.choice(("little", "big")))
        elif op == "insert":
            data[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif op == "delete":
            del data[pos:pos + rng.randint(1, 256)]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":  # duplicate a chunk of the seed somewhere else
            start = rng.randint(0, max(0, len(seed) - 1))
            data[pos:pos] = seed[start:start + rng.randint(1, 512)]
        else:  # a chunk of another seed (pickle into HDF5, zip into pickle …)
            donor = rng.choice(donors)
            start = rng.randint(0, max(0, len(donor) - 1))
            data[pos:pos + rng.randint(0, 64)] = donor[start:start + rng.randint(1, 512)]
        log.append(f"{op}@{pos}")
    return bytes(data), log


# ---------------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------------
class CaseTimeout(Exception):
    """Raised by the alarm when one case runs longer than CASE_TIMEOUT_S."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout(f"case ran longer than {CASE_TIMEOUT_S} s")


def run_case(path: Path) -> tuple[str, BaseException] | None:
    """None when the readers behaved; else (stage, exception)."""
    from ptycho_bridge import read_archive
    from ptycho_bridge.errors import ArchiveError
    from ptycho_bridge.ops.report import inspect_report, validate_path

    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_S)
    try:
        try:
            arch = read_archive(path)
            for entry in arch.models.values():
                dict(entry.tensors)
        except ArchiveError:
            pass
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return "read_archive", exc
        try:  # inspect's path: deferred arrays, HDF5 metadata without libhdf5 (issue 16)
            inspect_report(read_archive(path, verify=False, lazy_arrays=True), tensors=True)
        except ArchiveError:
            pass
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return "inspect", exc
        try:
            report = validate_path(path)
            if not isinstance(report, dict) or not (report["valid"] or report["errors"]):
                return "validate_path", AssertionError("invalid report without errors")
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return "validate_path", exc
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def finding_key(stage: str, exc: BaseException) -> str:
    """Stage + exception type + innermost frame inside ptycho_bridge (or the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "ptycho_bridge" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{stage}|{type(exc).__name__}|{where}"


def save_finding(findings: Path, key: str, stage: str, exc: BaseException, case: Path, target: Target,
                 log: list[str]) -> Path:
    ident = hashlib.sha1(key.encode()).hexdigest()[:12]
    folder = findings / ident
    if folder.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(case, folder / ("case" + Path(target.file_name).suffix))
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    (folder / "traceback.txt").write_text(f"key: {key}\nstage: {stage}\ntarget: {target.name}\nmutations: {log}\n\n{text}")
    return folder


# ---------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------
def worker(index: int, args: dict[str, Any], out: mp.Queue[dict[str, Any]]) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _on_alarm)
    rng = random.Random(args["seed"] * 1000 + index)
    scans = args.get("mode") == "scans"
    bases: Any = load_scan_bases() if scans else load_bases(Path(args["fixtures"]))
    targets = make_scan_targets() if scans else make_targets(bases)
    seeds = {t: (scan_seed_of if scans else seed_of)(bases, t) for t in targets}
    donors = [s for s in seeds.values() if len(s) < 1 << 20]
    findings = Path(args["findings"])
    scratch = Path(args["scratch"]) / f"worker-{index}"
    scratch.mkdir(parents=True, exist_ok=True)
    deadline = args["deadline"]
    quota = args["cases"]
    stats: dict[str, Any] = {"worker": index, "cases": 0, "findings": {}, "per_target": {}}
    last_report = time.monotonic()
    while stats["cases"] < quota and time.time() < deadline:
        target = rng.choice(targets)
        mutated, log = mutate(rng, seeds[target], donors)
        case = scratch / target.file_name
        case.write_bytes((scan_rebuild if scans else rebuild)(bases, target, mutated))
        (scratch / "current.json").write_text(json.dumps({"target": target.name, "mutations": log}))
        began = time.monotonic()
        result = run_scan_case(case) if scans else run_case(case)
        took = time.monotonic() - began
        stats["max_case_s"] = max(stats.get("max_case_s", 0.0), took)
        if took > SLOW_S:
            stats["slow"] = stats.get("slow", 0) + 1
        kind = log[0].split("@")[0] if log and log[0].startswith(("pickle", "h5")) else "bytes"
        stats.setdefault("mutators", {})[kind] = stats.setdefault("mutators", {}).get(kind, 0) + 1
        stats["cases"] += 1
        stats["per_target"][target.name] = stats["per_target"].get(target.name, 0) + 1
        if result is not None:
            stage, exc = result
            key = finding_key(stage, exc)
            entry = stats["findings"].setdefault(key, {"count": 0, "folder": None, "message": str(exc)[:300]})
            entry["count"] += 1
            if entry["folder"] is None:
                entry["folder"] = str(save_finding(findings, key, stage, exc, case, target, log))
        if time.monotonic() - last_report > 10:
            out.put({"progress": index, "cases": stats["cases"]})
            last_report = time.monotonic()
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(stats)


def _salvage(scratch: Path, index: int, folder: Path) -> str:
    """Copy a dead or hung worker's current case (the archive it was reading) into the findings."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in (scratch / f"worker-{index}").iterdir():
        shutil.copyfile(f, folder / f.name)
    return str(folder)


def run(args: argparse.Namespace) -> int:
    findings = Path(args.findings).resolve()
    findings.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ptycho-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    per_worker = -(-args.cases // args.jobs)
    shared = {"seed": args.seed, "fixtures": str(args.fixtures), "findings": str(findings), "scratch": str(scratch),
              "deadline": time.time() + args.seconds, "cases": per_worker, "mode": args.mode}
    ctx = mp.get_context("fork")
    queue: mp.Queue[dict[str, Any]] = ctx.Queue()
    start = time.monotonic()
    active: dict[int, Any] = {}

    def spawn(index: int) -> None:
        active[index] = ctx.Process(target=worker, args=(index, shared, queue), daemon=True)
        active[index].start()

    for i in range(args.jobs):
        spawn(i)
    next_index = args.jobs
    results: list[dict[str, Any]] = []
    progress: dict[int, int] = {}
    crashes: list[str] = []
    hangs: list[str] = []
    while active:
        try:
            msg = queue.get(timeout=2)
        except Exception:  # noqa: BLE001 - queue.Empty: look after the workers instead
            msg = None
        if msg is not None and "progress" in msg:
            progress[msg["progress"]] = msg["cases"]
            done = sum(progress.values())
            print(f"  {time.monotonic() - start:7.0f} s  {done:>9,} cases  {done / (time.monotonic() - start):7.1f} cases/s",
                  flush=True)
        elif msg is not None:
            results.append(msg)
            progress.pop(msg["worker"], None)
            active.pop(msg["worker"]).join(timeout=10)
        for i, proc in list(active.items()):
            current = scratch / f"worker-{i}" / "current.json"
            stale = current.exists() and time.time() - current.stat().st_mtime > HANG_S
            if proc.is_alive() and not stale:
                continue
            if proc.is_alive():  # stuck inside C code (the alarm cannot interrupt it): a hang
                hangs.append(_salvage(scratch, i, findings / f"hang-{i}"))
                print(f"  worker {i} hung for over {HANG_S:.0f} s; case saved to {hangs[-1]}", flush=True)
                proc.kill()
            elif proc.exitcode in (0, None):
                continue  # finished; its result is on the queue
            else:
                crashes.append(_salvage(scratch, i, findings / f"crash-{i}-exit{proc.exitcode}"))
                print(f"  worker {i} died (exit {proc.exitcode}); case saved to {crashes[-1]}", flush=True)
            proc.join(timeout=10)
            del active[i]
            results.append({"worker": i, "cases": progress.pop(i, 0), "findings": {}, "per_target": {}})
            if time.time() < shared["deadline"] - 5:
                spawn(next_index)
                next_index += 1
    elapsed = time.monotonic() - start
    shutil.rmtree(scratch, ignore_errors=True)

    total = sum(r["cases"] for r in results)
    merged: dict[str, dict[str, Any]] = {}
    per_target: dict[str, int] = {}
    for r in results:
        for key, f in r["findings"].items():
            m = merged.setdefault(key, {"count": 0, "folder": f["folder"], "message": f["message"]})
            m["count"] += f["count"]
        for t, n in r["per_target"].items():
            per_target[t] = per_target.get(t, 0) + n
    summary = {
        "mode": args.mode, "cases": total, "seconds": round(elapsed, 1), "cases_per_s": round(total / elapsed, 1) if elapsed else 0.0,
        "jobs": args.jobs, "seed": args.seed, "unique_findings": len(merged), "crashed_workers": crashes, "hangs": hangs,
        "findings": merged, "per_target": dict(sorted(per_target.items())),
        "max_case_s": round(max((r.get("max_case_s", 0.0) for r in results), default=0.0), 2),
        "slow_cases": sum(r.get("slow", 0) for r in results),
        "peak_rss_mb": round(max((r.get("peak_rss_mb", 0.0) for r in results), default=0.0)),
        "mutators": {k: sum(r.get("mutators", {}).get(k, 0) for r in results)
                     for k in sorted({k for r in results for k in r.get("mutators", {})})},
    }
    (findings / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{total:,} cases in {elapsed:.0f} s = {summary['cases_per_s']} cases/s ({args.jobs} job(s), seed {args.seed}, "
          f"mode {args.mode})")
    print(f"unique findings: {len(merged)}; hangs: {len(hangs)}; crashed workers: {len(crashes)}; "
          f"slowest case {summary['max_case_s']} s ({summary['slow_cases']} over {SLOW_S:.0f} s); "
          f"peak worker RSS {summary['peak_rss_mb']} MB; details in {findings / 'summary.json'}")
    print(f"mutators: {summary['mutators']}")
    for key, f in sorted(merged.items(), key=lambda kv: -kv[1]["count"]):
        print(f"  {f['count']:>6}x  {key}  → {f['folder']}\n          {f['message'][:160]}")
    return 1 if merged or crashes or hangs or summary["slow_cases"] else 0


def replay(path: Path) -> int:
    """Run one saved case and print what happens (exit 1 when it is still a finding)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    scan = path.suffix in (".npz", ".h5")
    result = run_scan_case(path) if scan else run_case(path)
    if result is None:
        print(f"{path}: readers behave (only ArchiveError / a clean validate report)")
        return 0
    stage, exc = result
    traceback.print_exception(type(exc), exc, exc.__traceback__)
    print(f"{path}: {finding_key(stage, exc)}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10**12, help="stop after this many cases (all jobs together)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--findings", default="fuzz-findings", help="folder for reproducers and summary.json")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--replay", type=Path, help="run one saved case instead of fuzzing (case.npz / case.h5: a scan)")
    parser.add_argument("--mode", choices=("archives", "scans"), default="archives",
                        help="archives: the archive readers (default); scans: the reconstruct scan readers")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    if args.mode == "archives" and not args.fixtures.is_dir():
        parser.error(f"fixtures not found: {args.fixtures}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
