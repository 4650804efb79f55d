"""``reconstruct`` throughput (patterns/s per engine, share of time per stage) and peak RSS on a 50,000-pattern scan.

``python benchmarks/reconstruct.py throughput [--engines onnx,torch,keras]``: synthetic scans written to a temp
folder (the fixture scan's patterns tiled for N=64, FFT-simulated patterns for N=128) on jittered grids; each
engine is built once per archive, outside the timing. patterns/s = grouped patterns (B·C) / wall time of
:func:`reconstruct` with the prebuilt engine. Shares: read = open + normalisation pass + pass-2 reads;
group = KD-tree grouping; model = X_full / x_norm + engine + per-group merge; stitch = streaming canvas.

``python benchmarks/reconstruct.py rss [--patterns 50000]``: writes an N=64 float32 stored ``.npz`` (800 MB for
50k patterns) chunk by chunk (never holding it), reconstructs it in a fresh process (gridsize 1, onnx) and
prints ``ru_maxrss``. The issue's bound is 1 GiB. The scan is deleted afterwards; it is never committed.

``python benchmarks/reconstruct.py ceiling [--engines onnx,torch] [--batches 16,64] [--threads 2]``: per network
(tf_N64_gs1, tf_N64_gs2, tf_N128_gs1) the FLOPs per pattern counted from the exported ONNX graph
(:mod:`_flops`: 2 x conv multiply-adds / patterns per sample), the engine's achieved GFLOP/s, and a float32
GEMM ceiling measured in the same run on the same threads (ONNX Runtime: a 1024³ ``MatMul`` session with the
engine's session options; torch: ``torch.mm`` with the engine's ``set_num_threads``). GEMM and network calls
alternate, and the % of ceiling is the median of the per-pair ratios, so a load change on a shared box moves
both sides of a ratio. ``--ort-variants default,whole,spin,basic,fixdim`` adds ONNX Runtime variants (the
whole batch in one call instead of the engine's micro-batches, spinning threads, ORT_ENABLE_BASIC, the batch
dimension fixed at session creation).

``python benchmarks/reconstruct.py e2e [--repeats 5]``: the CLI end to end on the shared 100-pattern scan
(``fixtures/reconstruct/dataset_N64.npz`` with ``tf_N64_gs1``), each run a fresh process: first run (empty ONNX
graph cache), second run (warm cache) and ``--no-cache``; wall time (median), peak RSS of that process
(``wait4``), and the ratio to upstream's ``scripts/inference/inference.py`` on the same scan. Upstream is not
installed here: its figures (25 s, 1,062 MB, measured by an earlier session) are ``--upstream-s`` /
``--upstream-mb``. ``--baseline ../main`` also runs another checkout's CLI in the same loop (a same-run baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, fixture  # noqa: E402
from _flops import flops_per_pattern  # noqa: E402
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


def throughput(engines: list[str], as_json: bool, only: list[str] | None = None) -> None:
    cases = [("N64_gs1", "tf_N64_gs1", 64, 2048), ("N64_gs2", "tf_N64_gs2", 64, 2048), ("N128_gs1", "tf_N128_gs1", 128, 512)]
    cases = [c for c in cases if not only or c[0] in only]
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
                             "merge_pct": round(100 * tm["merge"] / total, 1),
                             "merge_vs_engine_pct": round(100 * tm["merge"] / tm["model"], 1), "canvas": r.canvas["size"]})
    if as_json:
        print(json.dumps({"table": "reconstruct-throughput", "rows": rows}))
        return
    print(f"{'case':9} {'engine':6} {'groups':>6} {'patt':>5} {'patt/s':>8}   read  group  model (merge)  stitch  canvas"
          "  merge/engine")
    for r in rows:
        if "unavailable" in r:
            print(f"{r['case']:9} {r['engine']:6} unavailable: {r['unavailable']}")
            continue
        print(f"{r['case']:9} {r['engine']:6} {r['groups']:6d} {r['patterns']:5d} {r['patterns_per_s']:8.1f}  "
              f"{r['read_pct']:4.1f}%  {r['group_pct']:4.1f}%  {r['model_pct']:4.1f}% ({r['merge_pct']:4.1f}%)  "
              f"{r['stitch_pct']:4.1f}%  {r['canvas']}  {r['merge_vs_engine_pct']:5.1f}%")


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


# -- GEMM ceiling and achieved GFLOP/s ---------------------------------------------------------------
GEMM_SIZE = 1024
CEILING_CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1")


def gemm_ort(threads: int, size: int = GEMM_SIZE, options: object = None):  # type: ignore[no-untyped-def]
    """One float32 ``size³`` MatMul through ONNX Runtime with the engine's session options (a callable)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from converters.onnx.engine import session_options

    spec = [size, size]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, spec) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, spec)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=options or session_options(threads),
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {n: rng.random((size, size), dtype=np.float32) for n in "ab"}
    return lambda: sess.run(None, feeds)


def gemm_torch(threads: int, size: int = GEMM_SIZE):  # type: ignore[no-untyped-def]
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)

    def call() -> None:
        with torch.inference_mode():
            torch.mm(a, b)
    return call


def ort_variant(name: str, threads: int, batch: int):  # type: ignore[no-untyped-def]
    """The engine's session options with one change (``default`` = none)."""
    import onnxruntime as ort

    from converters.onnx.engine import session_options

    opts = session_options(threads)
    if name == "spin":
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    elif name == "basic":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    elif name == "fixdim":
        opts.add_free_dimension_override_by_name("B", batch)
    elif name not in ("default", "whole"):
        raise SystemExit(f"unknown ORT variant {name!r} (default, whole, spin, basic, fixdim)")
    return opts


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ceiling(engines: list[str], batches: list[int], threads: int, repeats: int, variants: list[str],
            as_json: bool, only: list[str] | None = None) -> None:
    """Achieved GFLOP/s per case, engine and batch beside a GEMM measured alternately on the same threads."""
    from converters.onnx.engine import make_session, run_session
    from converters.onnx.engine import run as run_engine
    from converters.onnx.export import build_onnx, model_bytes

    rows = []
    gemm_flops = 2.0 * GEMM_SIZE ** 3
    for case in [c for c in CEILING_CASES if not only or c in only]:
        info = open_model(fixture(case))
        graph = build_onnx(info.spec, info.tensors)
        C, N = info.spec.channels_in, info.spec.N
        fpp = flops_per_pattern(graph, C)
        data = model_bytes(graph)
        for eng in engines:
            for variant in (variants if eng == "onnx" else ["default"]):
                for bs in batches:
                    x = np.random.default_rng(1).random((bs, C, N, N), dtype=np.float32)
                    if eng == "onnx":
                        sess = make_session(data, threads=threads) if variant in ("default", "whole") else None
                        if sess is None:
                            import onnxruntime as ort

                            sess = ort.InferenceSession(data, sess_options=ort_variant(variant, threads, bs),
                                                        providers=["CPUExecutionProvider"])
                        net = (lambda s=sess: run_engine(s, x))  # the engine's call (its micro-batches)
                        if variant == "whole":  # the whole batch in one ONNX Runtime call
                            net = (lambda s=sess: run_session(s, x))
                        gemm = gemm_ort(threads)
                    else:
                        try:
                            loaded = load_engine(eng, info.spec, info.tensors, threads=threads)
                        except EngineUnavailable as exc:
                            rows.append({"case": case, "engine": eng, "unavailable": exc.reason})
                            break
                        net = (lambda l=loaded: l.run(x))
                        gemm = gemm_torch(threads) if eng == "torch" else gemm_ort(threads)
                    net(), gemm()  # warm-up
                    pairs = [(_timed(gemm), _timed(net)) for _ in range(repeats)]
                    g = [gemm_flops / tg / 1e9 for tg, _ in pairs]
                    n = [fpp * bs * C / tn / 1e9 for _, tn in pairs]
                    rows.append({"case": case, "engine": eng, "variant": variant, "batch": bs, "threads": threads,
                                 "gflop_per_pattern": round(fpp / 1e9, 4),
                                 "patterns_per_s": round(statistics.median(bs * C / tn for _, tn in pairs), 1),
                                 "gflops": round(statistics.median(n), 1), "gemm_gflops": round(statistics.median(g), 1),
                                 "pct_of_gemm": round(100 * statistics.median(a / b for a, b in zip(n, g)), 1)})
    if as_json:
        print(json.dumps({"table": "reconstruct-ceiling", "gemm": f"float32 {GEMM_SIZE}^3", "rows": rows}))
        return
    print(f"{'case':12} {'engine':6} {'variant':8} {'batch':>5} {'GFLOP/patt':>10} {'patt/s':>8} {'GFLOP/s':>8} "
          f"{'GEMM':>7} {'% GEMM':>7}")
    for r in rows:
        if "unavailable" in r:
            print(f"{r['case']:12} {r['engine']:6} unavailable: {r['unavailable']}")
            continue
        print(f"{r['case']:12} {r['engine']:6} {r['variant']:8} {r['batch']:5d} {r['gflop_per_pattern']:10.4f} "
              f"{r['patterns_per_s']:8.1f} {r['gflops']:8.1f} {r['gemm_gflops']:7.1f} {r['pct_of_gemm']:6.1f}%")


# -- end to end against upstream ---------------------------------------------------------------------
def _cli_run(argv: list[str], env: dict[str, str], checkout: Path = REPO) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh CLI process of ``checkout``'s code (``wait4``: its own rusage).

    ``python -m`` puts the working folder first on ``sys.path``, so the process runs in ``checkout``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ptycho_bridge", *argv], env={**env, "PYTHONPATH": str(checkout)},
                            cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"reconstruct failed: {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024 * 1.048576  # KiB -> MB


def e2e(repeats: int, upstream_s: float, upstream_mb: float, as_json: bool, baseline: str | None = None) -> None:
    archive = str(fixture("tf_N64_gs1"))
    results: dict[str, list[tuple[float, float]]] = {"first": [], "second": [], "no_cache": []}
    if baseline:
        results["baseline"] = []
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "out", Path(tmp) / "cache"
        env = {**os.environ, "PTYCHO_BRIDGE_NO_PROGRESS": "1",
               "PTYCHO_BRIDGE_CACHE_DIR": str(cache)}
        env.pop("PTYCHO_BRIDGE_NO_CACHE", None)
        argv = ["reconstruct", archive, str(SCAN), "-o", str(out), "--force"]
        _cli_run(argv, env)  # warm the page cache (interpreter, packages, fixtures)
        for _ in range(repeats):
            shutil.rmtree(cache, ignore_errors=True)
            results["first"].append(_cli_run(argv, env))
            results["second"].append(_cli_run(argv, env))
            results["no_cache"].append(_cli_run(argv + ["--no-cache"], env))
            if baseline:  # another checkout's code (e.g. main before this work), same scan, same moment
                base_argv = ["reconstruct", archive, str(SCAN), "-o", str(Path(tmp) / "baseline"), "--force"]
                results["baseline"].append(_cli_run(base_argv, env, Path(baseline).resolve()))
        report = json.loads((out / "reconstruct.json").read_text())
    rows = {}
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        peak = max(m for _, m in runs)
        rows[name] = {"wall_s": round(wall, 3), "walls": [round(w, 3) for w, _ in runs], "peak_rss_mb": round(peak),
                      "speedup_vs_upstream": round(upstream_s / wall, 1),
                      "rss_ratio_vs_upstream": round(upstream_mb / peak, 1)}
    doc = {"table": "reconstruct-e2e", "scan": str(SCAN), "archive": archive, "repeats": repeats,
           "upstream": {"wall_s": upstream_s, "peak_rss_mb": upstream_mb, "source": "documented, not re-measured"},
           "rows": rows, "last_timings": report["timings"], "cache_last": report.get("cache")}
    if as_json:
        print(json.dumps(doc))
        return
    print(f"upstream inference.py (documented): {upstream_s} s, {upstream_mb} MB; {repeats} repeat(s), median wall")
    for name, r in rows.items():
        vs = (f"  {rows['baseline']['wall_s'] / r['wall_s']:4.2f}x the baseline's speed" if "baseline" in rows else "")
        print(f"{name:9} {r['wall_s']:6.2f} s  {r['speedup_vs_upstream']:5.1f}x faster   peak RSS {r['peak_rss_mb']:5d} MB "
              f"({r['rss_ratio_vs_upstream']}x less)   runs {r['walls']}{vs}")
    print("stage timings of the last (no-cache) run:", {k: round(v, 3) for k, v in report["timings"].items()})


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_rss_child":
        _rss_child(sys.argv[2])
        raise SystemExit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["throughput", "rss", "ceiling", "e2e"])
    ap.add_argument("--engines", default=None, help="throughput: onnx,torch,keras; ceiling: onnx,torch")
    ap.add_argument("--patterns", type=int, default=50_000)
    ap.add_argument("--cases", default=None, help="throughput: N64_gs1,N64_gs2,N128_gs1; ceiling: tf_N64_gs1,… (default: all)")
    ap.add_argument("--batches", default="16,64", help="ceiling: engine batch sizes (groups per call)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ceiling: threads for GEMM and engines")
    ap.add_argument("--repeats", type=int, default=5, help="ceiling: GEMM/network pairs; e2e: runs of each kind")
    ap.add_argument("--ort-variants", default="default", help="ceiling: default,whole,spin,basic,fixdim")
    ap.add_argument("--baseline", default=None, help="e2e: another checkout (e.g. ../main) run alongside, same scan")
    ap.add_argument("--upstream-s", type=float, default=25.0)
    ap.add_argument("--upstream-mb", type=float, default=1062.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.what == "throughput":
        throughput((a.engines or "onnx,torch,keras").split(","), a.json, a.cases.split(",") if a.cases else None)
    elif a.what == "ceiling":
        ceiling((a.engines or "onnx,torch").split(","), [int(b) for b in a.batches.split(",")], a.threads,
                a.repeats, a.ort_variants.split(","), a.json, a.cases.split(",") if a.cases else None)
    elif a.what == "e2e":
        e2e(a.repeats, a.upstream_s, a.upstream_mb, a.json, a.baseline)
    else:
        rss(a.patterns)
