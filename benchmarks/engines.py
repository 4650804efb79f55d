"""Engine throughput: ONNX Runtime vs torch eager vs Keras, patterns/s (a script, not a test).

Why: ``export-onnx`` is only worth recommending for deployment if ORT is at least as fast as the
framework engines. Each (engine, case) runs in its own subprocess, so one framework's thread pools,
allocators and import side effects cannot slow another; each is warmed up, then timed ``--repeats``
times, and the median is reported. All engines get the same thread count (``--threads``, default
``os.cpu_count()``): ORT ``intra_op_num_threads``, ``torch.set_num_threads``, TF intra-op threads.
Networks are the upstream TF fixtures' specs with seeded random weights (throughput does not depend
on the values), so the script needs neither fixtures nor weights files.

    python benchmarks/engines.py [--cases tf_N64_gs1,...] [--batches 1,16] [--repeats 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {  # upstream TF fixture networks (tests' fixtures); padded_size does not affect the core
    "tf_N64_gs1": dict(N=64, gridsize=1),
    "tf_N64_gs2": dict(N=64, gridsize=2),
    "tf_N128_gs1": dict(N=128, gridsize=1),
}
ENGINES = ("onnx", "torch", "keras")


def _spec(case: str):  # type: ignore[no-untyped-def]
    from ptycho_bridge.spec.network import tf_spec

    c = CASES[case]
    return tf_spec(N=c["N"], gridsize=c["gridsize"], n_filters_scale=1, object_big=True, probe_big=True,
                   pad_object=True, amp_activation="sigmoid")


def _tensors(spec, seed: int = 0):  # type: ignore[no-untyped-def]
    import numpy as np

    from ptycho_bridge.spec.network import expected_tensors

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_tensors(spec).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        out[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return out


def worker(engine: str, case: str, batches: list[int], repeats: int, threads: int, ort_variant: str) -> dict:
    """Runs inside the subprocess: build once, warm up, time each batch size."""
    import numpy as np

    from ptycho_bridge.ops.engines import load_engine

    spec = _spec(case)
    tensors = _tensors(spec)
    t0 = time.perf_counter()
    if engine == "onnx" and ort_variant != "default":
        runner = _onnx_variant(spec, tensors, threads, ort_variant)
    else:
        runner = load_engine(engine, spec, tensors, threads=threads).run
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    result = {"engine": engine, "case": case, "threads": threads, "variant": ort_variant if engine == "onnx" else "",
              "build_s": build_s, "batches": {}}
    for b in batches:
        x = rng.random((b, spec.channels_in, spec.N, spec.N), dtype=np.float32)
        for _ in range(3):
            runner(x)
        times = []
        deadline = time.perf_counter() + 60.0
        for _ in range(repeats):
            t = time.perf_counter()
            runner(x)
            times.append(time.perf_counter() - t)
            if time.perf_counter() > deadline:
                break
        med = statistics.median(times)
        result["batches"][str(b)] = {"median_s": med, "patterns_per_s": b / med, "runs": len(times)}
    return result


def _onnx_variant(spec, tensors, threads: int, variant: str):  # type: ignore[no-untyped-def]
    """ORT session-option variants that were tried (see docs/performance.md)."""
    import onnxruntime as ort

    from converters.onnx.engine import run_session, session_options
    from converters.onnx.export import build_onnx

    opts = session_options(threads)  # the engine's tuned options, then one change
    if variant == "basic":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    elif variant == "spin":  # ORT's default: idle workers busy-wait
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    elif variant == "noarena":
        opts.enable_cpu_mem_arena = False
    elif variant == "parallel":
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        opts.inter_op_num_threads = threads
    session = ort.InferenceSession(build_onnx(spec, tensors).SerializeToString(), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    return lambda x: run_session(session, x)


def _spawn(engine: str, case: str, args: argparse.Namespace, variant: str = "default") -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--cases", case, "--batches", args.batches,
           "--repeats", str(args.repeats), "--threads", str(args.threads), "--ort-variant", variant]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        return {"engine": engine, "case": case, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ort-variants", default="", help="also time these ORT option variants: "
                    "basic,spin,noarena,parallel")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ort-variant", default="default", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.cases, batches, args.repeats, args.threads, args.ort_variant)))
        return
    results = []
    for case in args.cases.split(","):
        for engine in args.engines.split(","):
            results.append(_spawn(engine, case, args))
            print(f"# {case} {engine}: done", file=sys.stderr)
        for variant in filter(None, args.ort_variants.split(",")):
            results.append(_spawn("onnx", case, args, variant))
            print(f"# {case} onnx[{variant}]: done", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"threads={args.threads}  repeats={args.repeats} (median)  patterns/s")
    head = f"| case | batch | {' | '.join(args.engines.split(','))} | ORT/torch | ORT/Keras |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    by = {(r["case"], r["engine"], r.get("variant", "")): r for r in results}
    for case in args.cases.split(","):
        for b in batches:
            def pps(engine: str, variant: str = "") -> float | None:
                r = by.get((case, engine, variant if engine == "onnx" else ""))
                if r is None or "error" in r:
                    return None
                return r["batches"][str(b)]["patterns_per_s"]
            vals = {e: pps(e, "default") for e in args.engines.split(",")}
            cells = " | ".join("—" if v is None else f"{v:.1f}" for v in vals.values())
            o, t, k = vals.get("onnx"), vals.get("torch"), vals.get("keras")
            ratio = lambda a, c: "—" if not a or not c else f"{a / c:.2f}×"  # noqa: E731
            print(f"| {case} | {b} | {cells} | {ratio(o, t)} | {ratio(o, k)} |")
            for variant in filter(None, args.ort_variants.split(",")):
                v = pps("onnx", variant)
                print(f"|   onnx[{variant}] | {b} | {'—' if v is None else f'{v:.1f}'} | {ratio(v, t)} | |")
    for r in results:
        if "error" in r:
            print(f"error: {r['case']} {r['engine']}: {r['error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
