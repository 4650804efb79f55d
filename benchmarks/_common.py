"""Shared helpers for the benchmark scripts: fixture paths, medians, fresh-process timing, machine facts.

Why: every figure in ``docs/performance.md`` is a median over repeated runs and every ratio is
taken between numbers measured in the same run on the same machine; these helpers make the
scripts do that the same way. Benchmarks are not tests: they print, they never assert.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURES = (REPO / ".." / "shared" / "fixtures" / "upstream").resolve()
PYTHON = sys.executable
CLI = str(Path(PYTHON).with_name("ptycho-bridge"))
TF_CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1")
TORCH_CASES = ("torch_N64_gs1", "torch_N64_gs2")
MB = 1e6


def fixture(case: str, name: str = "wts.h5.zip") -> Path:
    path = FIXTURES / case / name
    if not path.exists():
        sys.exit(f"fixture {path} not found: the benchmarks need ../shared/fixtures/upstream next to the repo")
    return path


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def time_call(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in this process (seconds), after ``warmup`` unrecorded calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times)


def time_process(argv: Sequence[str], repeat: int, warmup: int = 1) -> float:
    """Median wall time of a fresh process (seconds); the process must exit 0."""
    def once() -> None:
        proc = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:3]}… exited {proc.returncode}: {proc.stderr.strip()[-500:]}")

    return time_call(once, repeat, warmup)


def peak_rss_mb(argv: Sequence[str]) -> float:
    """Peak resident set size of a fresh child process (MB), from ``getrusage(RUSAGE_CHILDREN)``.

    Each measurement runs in its own wrapper process so that ``RUSAGE_CHILDREN`` holds exactly one child.
    """
    code = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([PYTHON, "-c", code, *argv], capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "0":
        raise RuntimeError(f"{argv[:3]}… exited {out[0]}")
    return int(out[1]) * 1024 / MB  # ru_maxrss is KiB on Linux


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def machine_facts() -> dict[str, Any]:
    """What docs/performance.md quotes about the machine the numbers came from."""
    import h5py
    import numpy

    model = platform.processor() or ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    facts = {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "platform": platform.platform(),
    }
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("torch", "tensorflow-cpu", "keras"):
        try:
            facts[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return facts


def migrate_fixture(source: Path, out: Path) -> Path:
    """A bridge-2 archive holding the fixture's models, params and scale (written with the real writer)."""
    from ptycho_bridge import read_archive
    from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive

    arch = read_archive(source)
    models = {name: ModelToWrite(m.spec, dict(m.tensors)) for name, m in arch.models.items() if m.spec is not None}
    return write_archive(
        out, force=True, backend=arch.backend, source_era=arch.era, models=models, params=arch.params,
        intensity_scale=arch.intensity_scale, torch_config=arch.torch_config,
    )


def synthetic_large(out: Path, n_filters_scale: int = 4) -> Path:
    """A bridge-2 archive with the N=128 TF network widened ``n_filters_scale`` times (seeded weights)."""
    from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
    from ptycho_bridge.ops.sample import sample_params, sample_tensors
    from ptycho_bridge.spec.network import tf_padded_size, tf_spec

    params = dict(sample_params(N=128), n_filters_scale=n_filters_scale)
    spec = tf_spec(N=128, gridsize=1, n_filters_scale=n_filters_scale, object_big=True, probe_big=True,
                   pad_object=True, amp_activation="sigmoid",
                   padded_size=tf_padded_size(128, 1, params["offset"], params["max_position_jitter"]))
    return write_archive(out, force=True, backend="tensorflow", source_era="sample",
                         models={"diffraction_to_obj": ModelToWrite(spec, sample_tensors(spec))},
                         params=params, intensity_scale=params["intensity_scale"])


def emit(title: str, rows: list[dict[str, Any]], as_json: bool) -> None:
    """Print rows as an aligned text table (or JSON lines with ``--json``)."""
    if as_json:
        print(json.dumps({"table": title, "rows": rows}))
        return
    print(f"\n## {title}")
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)

