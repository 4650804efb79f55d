"""Scan-read cost of the issue-23 hardening: pattern reads through ``open_dataset`` against plain in-process reads.

For one synthetic N=64 scan written four ways (stored ``.npz``, deflated ``.npz``, contiguous HDF5, gzip-chunked
HDF5) it times, in one process and interleaved (``--repeat`` rounds, the median of each):

- ``open``: ``open_dataset`` (metadata, coordinates, probe);
- ``pass1``: every pattern in sorted chunks of ``--read-chunk`` (reconstruct's first pass);
- ``pass2``: ``M / --block`` blocks of ``--block`` sorted indices (the per-batch reads of the second pass),

and their ``total``, against the same selections read the pre-issue way as the baseline: ``np.load`` for ``.npz`` (whole array once) and
h5py in this process for HDF5 (what ``H5Patterns`` did before it moved into the isolated child). Printed: seconds
and the ratio ours / baseline per row. Timings on a shared machine are noisy: compare ratios from one run.

    python benchmarks/scan_read.py --patterns 2000            # quick check
    python benchmarks/scan_read.py --patterns 50000 --repeat 3  # the quiet measurement
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptycho_bridge.ops.reconstruct.dataset import open_dataset  # noqa: E402

N = 64


def write_scans(folder: Path, M: int) -> dict[str, Path]:
    rng = np.random.default_rng(23)
    pats = (rng.random((M, N, N), dtype=np.float32) ** 4 * 50).astype(np.float32)  # sparse-ish, compressible
    pats[:, :8] = 0
    d = {"diffraction": pats, "xcoords": rng.random(M) * 500, "ycoords": rng.random(M) * 500,
         "probeGuess": (rng.random((N, N)) + 1j).astype(np.complex64)}
    out = {"npz stored": folder / "s.npz", "npz deflated": folder / "d.npz", "h5 contiguous": folder / "c.h5",
           "h5 gzip-chunked": folder / "g.h5"}
    np.savez(out["npz stored"], **d)
    np.savez_compressed(out["npz deflated"], **d)
    for name, kw in (("h5 contiguous", {}), ("h5 gzip-chunked", {"chunks": (16, N, N), "compression": "gzip"})):
        with h5py.File(out[name], "w") as f:
            for k, v in d.items():
                f.create_dataset(k, data=v, **(kw if k == "diffraction" else {}))
    return out


def selections(M: int, chunk: int, block: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pass1 = [np.arange(s, min(M, s + chunk)) for s in range(0, M, chunk)]
    rng = np.random.default_rng(7)
    perm = rng.permutation(M)  # pass 2 reads groups in group order: sorted within a block, scattered across
    pass2 = [np.sort(perm[s:s + block]) for s in range(0, M, block)]
    return pass1, pass2


def ours(path: Path, pass1: list[np.ndarray], pass2: list[np.ndarray]) -> dict[str, float]:
    t = time.perf_counter()
    ds = open_dataset(str(path), N)
    out = {"open": time.perf_counter() - t}
    try:
        t = time.perf_counter()
        for sel in pass1:
            ds.patterns.take(sel)
        out["pass1"] = time.perf_counter() - t
        t = time.perf_counter()
        for sel in pass2:
            ds.patterns.take(sel)
        out["pass2"] = time.perf_counter() - t
    finally:
        ds.close()
    return out


def baseline(path: Path, pass1: list[np.ndarray], pass2: list[np.ndarray]) -> dict[str, float]:
    t = time.perf_counter()
    if path.suffix == ".npz":
        with np.load(path) as z:
            x, y, probe = z["xcoords"], z["ycoords"], z["probeGuess"]
            pats = z["diffraction"]  # the whole array: what np.load gives
        out = {"open": time.perf_counter() - t}
        take: Callable[[np.ndarray], Any] = lambda sel: pats[sel].astype(np.float32)  # noqa: E731
        closer: Callable[[], None] = lambda: None  # noqa: E731
    else:
        f = h5py.File(path, "r")
        x, y, probe = f["xcoords"][()], f["ycoords"][()], f["probeGuess"][()]
        dset = f["diffraction"]
        out = {"open": time.perf_counter() - t}

        def take(sel: np.ndarray) -> Any:
            lo, hi = int(sel[0]), int(sel[-1]) + 1
            return np.asarray(dset[lo:hi] if hi - lo == sel.size else dset[sel], dtype=np.float32)
        closer = f.close
    del x, y, probe
    try:
        t = time.perf_counter()
        for sel in pass1:
            take(sel)
        out["pass1"] = time.perf_counter() - t
        t = time.perf_counter()
        for sel in pass2:
            take(sel)
        out["pass2"] = time.perf_counter() - t
    finally:
        closer()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patterns", type=int, default=2000)
    ap.add_argument("--read-chunk", type=int, default=1024)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan_read_") as tmp:
        scans = write_scans(Path(tmp), args.patterns)
        pass1, pass2 = selections(args.patterns, args.read_chunk, args.block)
        runs: dict[tuple[str, str], dict[str, list[float]]] = {}
        for _ in range(args.repeat):
            for name, path in scans.items():
                for who, fn in (("ours", ours), ("baseline", baseline)):
                    for k, v in fn(path, pass1, pass2).items():
                        runs.setdefault((name, who), {}).setdefault(k, []).append(v)
        best = {key: {k: statistics.median(v) for k, v in stages.items()} for key, stages in runs.items()}
        for stages in best.values():  # np.load inflates everything at open: compare totals too
            stages["total"] = stages["open"] + stages["pass1"] + stages["pass2"]
        print(f"{args.patterns} patterns of {N}x{N} float32, pass-1 chunks of {args.read_chunk}, pass-2 blocks of "
              f"{args.block} (scattered, as at gridsize > 1); median of {args.repeat}")
        print(f"{'scan':<18}{'stage':<7}{'ours s':>10}{'baseline s':>12}{'ratio':>8}")
        for name in scans:
            o, b = best[(name, "ours")], best[(name, "baseline")]
            for stage in ("open", "pass1", "pass2", "total"):
                ratio = o[stage] / b[stage] if b[stage] > 0 else float("inf")
                print(f"{name:<18}{stage:<7}{o[stage]:>10.4f}{b[stage]:>12.4f}{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
