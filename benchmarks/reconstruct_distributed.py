"""``reconstruct`` on a Dask LocalCluster vs in-process: patterns/s, scaling, bytes moved per pattern (issue 21).

``python benchmarks/reconstruct_distributed.py [--patterns 20000] [--case tf_N64_gs1] [--json]``

One run, one generated scan (``benchmarks/reconstruct.py``'s ``write_scan``: the fixture scan's N=64 patterns
tiled on a jittered grid, a stored ``.npz`` in a temp folder) and these rows, each the median of ``--repeat``
timed runs after one warm-up run (which also builds the engine in every worker, so no row pays a build);
the rows run in interleaved rounds (every row once per round), so load from other processes falls on all alike:

- ``in-process tN``: :func:`reconstruct` with an engine built once with N threads (the baseline);
- ``W workers x tN``: the same call with ``client=`` a ``LocalCluster`` of W single-threaded worker processes,
  each engine with N threads; the cluster's start-up is outside the timing.

patterns/s = grouped patterns / wall time of the call. Ratios are against rows of the same run: ``1 worker /
in-process`` at the same engine threads (goal >= 0.90) and ``2 workers x t1 / 1 worker x t1`` (goal >= 1.7 on
2 cores). Bytes moved per pattern and the per-task cost come from the run's ``distributed`` report; every row
checks that the object equals the in-process one bit for bit. Benchmarks print; they never assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fixture  # noqa: E402
from reconstruct import write_scan  # noqa: E402
from ptycho_bridge.ops.engines import load_engine  # noqa: E402
from ptycho_bridge.ops.reconstruct.distributed import cluster_client  # noqa: E402
from ptycho_bridge.ops.reconstruct.modelinfo import open_model  # noqa: E402
from ptycho_bridge.ops.reconstruct.pipeline import reconstruct  # noqa: E402


def _noop(i: int) -> int:
    return i


def task_overhead(client: Any, n: int = 2000) -> float:
    """Seconds per trivial task (submit, schedule, run, gather) on ``client``: the scheduler's share of a block."""
    client.gather(client.map(_noop, range(100), pure=False))
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patterns", type=int, default=20_000)
    ap.add_argument("--case", default="tf_N64_gs1")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # the workers import us
    logging.getLogger("distributed").setLevel(logging.ERROR)

    cores = os.cpu_count() or 1
    archive = str(fixture(a.case))
    info = open_model(archive)
    configs: list[tuple[str, int, int]] = [(f"in-process t{t}", 0, t) for t in sorted({1, cores})]
    configs += [(f"1 worker x t{t}", 1, t) for t in sorted({1, cores})] + [("2 workers x t1", 2, 1)]
    rows: list[dict[str, Any]] = []
    clients: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:  # clusters stop before tmp goes
        scan = write_scan(Path(tmp) / "scan.npz", a.patterns, info.N)
        calls: dict[str, Any] = {}
        for name, workers, threads in configs:
            if workers == 0:
                run = load_engine("onnx", info.spec, info.tensors, threads=threads).run
                calls[name] = lambda run=run, **kw: reconstruct(info, scan, run, **kw)
            else:
                clients[name] = stack.enter_context(cluster_client(workers=workers))
                calls[name] = lambda c=clients[name], t=threads, **kw: reconstruct(
                    archive, scan, "onnx", client=c, threads=t, **kw)
        # rounds interleave the rows, so load from other processes falls on all of them alike
        walls: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        last: dict[str, Any] = {}
        for name, _, _ in configs:
            calls[name](n_groups=min(a.patterns, 512))  # warm-up: every worker's engine built
        for _ in range(a.repeat):
            for name, _, _ in configs:
                t0 = time.perf_counter()
                last[name] = calls[name]()
                walls[name].append(time.perf_counter() - t0)
        overhead = task_overhead(clients["2 workers x t1"])
    ref = last[configs[0][0]]
    for name, workers, threads in configs:
        r = last[name]
        row: dict[str, Any] = {"row": name, "workers": workers, "threads": threads,
                               "wall_s": statistics.median(walls[name]), "patterns": int(r.groups.size),
                               "same_bits": bool(np.array_equal(r.object, ref.object))}
        if workers:
            d = r.info["distributed"]
            ws = d["worker_seconds"]
            row.update(blocks=d["blocks"], bytes_per_pattern=d["bytes_per_pattern"], bytes=d["bytes"],
                       stage_seconds=d["stage_seconds"],
                       task_s=round(sum(ws.get(k, 0.0) for k in ("read", "model", "merge", "stitch"))
                                    / max(1, d["blocks"]), 4))
        rows.append(row)
    for r in rows:
        r["patterns_per_s"] = round(r["patterns"] / r["wall_s"], 1)
        r["wall_s"] = round(r["wall_s"], 2)

    def pps(name: str) -> float | None:
        return next((r["patterns_per_s"] for r in rows if r["row"] == name), None)

    ratios = {}
    for t in sorted({1, cores}):
        one, base = pps(f"1 worker x t{t}"), pps(f"in-process t{t}")
        if one and base:
            ratios[f"1 worker / in-process (t{t}, goal >= 0.90)"] = round(one / base, 3)
    if pps("2 workers x t1") and pps("1 worker x t1"):
        ratios["2 workers / 1 worker (t1, goal >= 1.7)"] = round(pps("2 workers x t1") / pps("1 worker x t1"), 3)
    if a.json:
        print(json.dumps({"table": "reconstruct-distributed", "cores": cores, "rows": rows, "ratios": ratios,
                          "task_overhead_ms": round(1e3 * overhead, 3)}))
        return
    print(f"{a.case}, {rows[0]['patterns']} patterns, {cores} cores, median of {a.repeat}")
    print(f"{'row':20} {'patt/s':>8} {'wall s':>7} {'blocks':>6} {'task s':>7} {'B/pattern':>10}  same bits")
    for r in rows:
        print(f"{r['row']:20} {r['patterns_per_s']:8.1f} {r['wall_s']:7.2f} {r.get('blocks', ''):>6} "
              f"{r.get('task_s', ''):>7} {r.get('bytes_per_pattern', ''):>10}  {r['same_bits']}")
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print(f"scheduler overhead per trivial task (2 workers): {1e3 * overhead:.2f} ms")
    last = rows[-1]
    if "bytes" in last:
        print("bytes moved (last row):", json.dumps(last["bytes"]), "stage seconds:", json.dumps(last["stage_seconds"]))


if __name__ == "__main__":
    main()
