"""``reconstruct`` throughput (patterns/s per engine, share of time per stage) and peak RSS on a 50,000-pattern scan.

``python benchmarks/reconstruct.py throughput [--engines onnx,torch,keras]``: synthetic scans written to a temp
folder (the fixture scan's patterns tiled for N=64, FFT-simulated patterns for N=128) on jittered grids; each
engine is built once per archive, outside the timing. patterns/s = grouped patterns (B·C) / wall time of
:func:`reconstruct` with the prebuilt engine. Shares: read = open + normalisation pass + pass-2 reads;
group = KD-tree grouping; model = X_full / x_norm + engine + per-group merge; stitch = streaming canvas.

``python benchmarks/reconstruct.py rss [--patterns 50000]``: writes an N=64 float32 stored ``.npz`` (800 MB for
50k patterns) chunk by chunk (never holding it), reconstructs it in a fresh process (gridsize 1, onnx) and
prints ``ru_maxrss``. The issue's bound is 1 GiB. The scan is deleted afterwards; it is never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fixture  # noqa: E402
from ptycho_bridge.ops.engines import EngineUnavailable, load_engine  # noqa: E402
from ptycho_bridge.ops.reconstruct.modelinfo import open_model  # noqa: E402
from ptycho_bridge.ops.reconstruct.pipeline import reconstruct  # noqa: E402

SCAN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reconstruct" / "dataset_N64.npz"


def grid_coords(n: int, step: float, rng: np.random.Generator, margin: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    side = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    return (margin + step * (k % side) + rng.uniform(-1.5, 1.5, n),
            margin + step * (k // side) + rng.uniform(-1.5, 1.5, n))


def synth_patterns(n: int, N: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N] - N / 2
    probe = np.exp(-(xx ** 2 + yy ** 2) / (2 * (N / 8) ** 2))
    obj = np.exp(1j * rng.uniform(0, 1, (n, N, N))) * rng.uniform(0.5, 1, (n, N, N))
    amp = np.abs(np.fft.fftshift(np.fft.fft2(obj * probe), axes=(1, 2))) / N
    return (amp * np.sqrt(1e4 / np.mean(np.sum(amp ** 2, axis=(1, 2))))).astype(np.float32)


def write_scan(path: Path, n: int, N: int, seed: int = 1, block: int = 2048) -> Path:
    """A stored ``.npz`` whose ``diffraction`` member is written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    x, y = grid_coords(n, 4.0 if N == 64 else 8.0, rng)
    if N == 64:
        with np.load(SCAN) as z:
            base, probe = z["diffraction"], z["probeGuess"]

        def blocks(a: int, b: int) -> np.ndarray:
            return base[np.arange(a, b) % base.shape[0]]
    else:
        probe = np.ones((N, N), np.complex64)

        def blocks(a: int, b: int) -> np.ndarray:
            return synth_patterns(b - a, N, np.random.default_rng(seed + a))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("diffraction.npy", "w", force_zip64=True) as fp:
            np.lib.format.write_array_header_1_0(fp, {"descr": "<f4", "fortran_order": False, "shape": (n, N, N)})
            for s in range(0, n, block):
                fp.write(np.ascontiguousarray(blocks(s, min(n, s + block)), dtype="<f4").tobytes())
        for k, v in {"xcoords": x, "ycoords": y, "probeGuess": probe.astype(np.complex64)}.items():
            with zf.open(k + ".npy", "w", force_zip64=True) as fp:
                np.lib.format.write_array(fp, np.asarray(v), allow_pickle=False)
    return path


def throughput(engines: list[str], as_json: bool) -> None:
    cases = [("N64_gs1", "tf_N64_gs1", 64, 2048), ("N64_gs2", "tf_N64_gs2", 64, 2048), ("N128_gs1", "tf_N128_gs1", 128, 512)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch, N, n in cases:
            scan = write_scan(Path(tmp) / f"{label}.npz", n, N)
            info = open_model(fixture(arch))
            for eng in engines:
                try:
                    run = load_engine(eng, info.spec, info.tensors).run
                except EngineUnavailable as exc:
                    rows.append({"case": label, "engine": eng, "unavailable": exc.reason})
                    continue
                reconstruct(info, scan, run, n_groups=8)  # warm-up
                t0 = time.perf_counter()
                r = reconstruct(info, scan, run)
                wall = time.perf_counter() - t0
                tm = r.timings
                parts = {"read": tm["open"] + tm["normalise"] + tm["read"], "group": tm["group"],
                         "model": tm["model"] + tm["merge"], "stitch": tm["stitch"]}
                total = sum(parts.values())
                rows.append({"case": label, "engine": eng, "groups": int(r.groups.shape[0]), "patterns": int(r.groups.size),
                             "patterns_per_s": round(r.groups.size / wall, 1), "wall_s": round(wall, 2),
                             **{f"{k}_pct": round(100 * v / total, 1) for k, v in parts.items()},
                             "merge_pct": round(100 * tm["merge"] / total, 1), "canvas": r.canvas["size"]})
    if as_json:
        print(json.dumps({"table": "reconstruct-throughput", "rows": rows}))
        return
    print(f"{'case':9} {'engine':6} {'groups':>6} {'patt':>5} {'patt/s':>8}   read  group  model (merge)  stitch  canvas")
    for r in rows:
        if "unavailable" in r:
            print(f"{r['case']:9} {r['engine']:6} unavailable: {r['unavailable']}")
            continue
        print(f"{r['case']:9} {r['engine']:6} {r['groups']:6d} {r['patterns']:5d} {r['patterns_per_s']:8.1f}  "
              f"{r['read_pct']:4.1f}%  {r['group_pct']:4.1f}%  {r['model_pct']:4.1f}% ({r['merge_pct']:4.1f}%)  "
              f"{r['stitch_pct']:4.1f}%  {r['canvas']}")


def rss(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_scan(Path(tmp) / f"rss_{n}.npz", n, 64, seed=7)
        print(f"wrote {n} patterns, {path.stat().st_size / 1e6:.0f} MB, in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run([sys.executable, __file__, "_rss_child", str(path)], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    if out.returncode:
        print(out.stderr[-3000:])
        raise SystemExit(out.returncode)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(res, indent=1))
    print(f"peak RSS {res['peak_rss_mib']:.0f} MiB ({'under' if res['peak_rss_mib'] < 1024 else 'OVER'} 1 GiB)")


def _rss_child(path: str) -> None:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = reconstruct(str(fixture("tf_N64_gs1")), path, "onnx")
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"patterns": int(r.groups.size), "canvas": r.canvas["size"], "wall_s": round(wall, 1),
                      "patterns_per_s": round(r.groups.size / wall, 1), "rss_before_mib": round(base / 1024),
                      "peak_rss_mib": round(peak / 1024), "finite": bool(np.isfinite(r.object).all()),
                      "timings": {k: round(v, 2) for k, v in r.timings.items()}}))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_rss_child":
        _rss_child(sys.argv[2])
        raise SystemExit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["throughput", "rss"])
    ap.add_argument("--engines", default="onnx,torch,keras")
    ap.add_argument("--patterns", type=int, default=50_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.what == "throughput":
        throughput(a.engines.split(","), a.json)
    else:
        rss(a.patterns)
