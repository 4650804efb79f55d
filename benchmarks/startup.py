"""Start-up and many-archive rate of the CLI (issue 16), in fresh processes, with the load average.

Tables (every ratio between numbers of the same run; medians of ``--repeat`` fresh processes after
one unrecorded warm-up; the 1-minute load average is printed before and after each table because
the machine may be shared):

* ``start-up``: ``python -c pass`` (the floor), ``ptycho-bridge --help``, ``schema manifest``.
* ``per era``: ``inspect --json`` and ``validate --json`` of one archive per era, the ratio to the
  floor, and the framework load path where one exists (``inspect_vs_frameworks.TF_PATH`` for the
  Keras era, ``torch.load(weights_only=True)`` of the re-saved state dict for the torch bundle).
* ``many archives``: ``--count`` copies of the fixtures (cycled: every legacy archive plus two
  bridge-2 migrations) in a temp folder, ``validate --jsonl`` and ``inspect --jsonl`` of the folder
  with ``-j 1`` vs ``-j 2``: archives per second and the speed-up.

The CLI runs as ``python -m ptycho_bridge`` with this checkout first on ``PYTHONPATH``.

Run: ``.venv/bin/python benchmarks/startup.py [--repeat 5] [--count 200] [--many-repeat 5] [--json]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MB, PYTHON, REPO, emit, fixture, median, migrate_fixture  # noqa: E402

PB = [PYTHON, "-m", "ptycho_bridge"]


def time_process(argv: list[str], repeat: int, warmup: int = 1) -> float:
    """Median wall time (s) of a fresh process that must exit 0; its median CPU time (user + sys of it
    and its children, s) is kept in ``CPU[-1]``: on a loaded box wall time includes waiting for a core."""
    import resource
    import subprocess

    walls, cpus = [], []
    for i in range(warmup + repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:4]}... exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        if i >= warmup:
            walls.append(wall)
            cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    CPU.append(median(cpus))
    return median(walls)


CPU: list[float] = []


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def era_archives(tmp: Path) -> list[tuple[str, Path]]:
    out = [
        ("tf-modelmanager-1", fixture("tf_N64_gs1")),
        ("torch-bundle-2", fixture("torch_N64_gs1")),
        ("lightning-ckpt", fixture("torch_N64_gs1", "lightning.ckpt")),
        ("bridge-2 (from tf_N64_gs1)", migrate_fixture(fixture("tf_N64_gs1"), tmp / "b2-tf.zip")),
        ("bridge-2 (from torch_N64_gs1)", migrate_fixture(fixture("torch_N64_gs1"), tmp / "b2-torch.zip")),
    ]
    savedmodel = REPO.parent / "shared" / "fixtures" / "upstream-savedmodel" / "tf215_N64_gs1" / "wts.h5.zip"
    if savedmodel.exists():
        out.insert(1, ("tf-savedmodel-1", savedmodel))
    return out


def framework_path(era: str, path: Path, tmp: Path) -> list[str] | None:
    from inspect_vs_frameworks import TF_PATH, TORCH_PATH, torch_pth

    if era == "tf-modelmanager-1":
        return [PYTHON, "-c", TF_PATH, str(path)]
    if era == "torch-bundle-2":
        return [PYTHON, "-c", TORCH_PATH, str(torch_pth("torch_N64_gs1", tmp / "model.pth"))]
    return None


def startup_rows(repeat: int) -> list[dict]:
    floor = time_process([PYTHON, "-c", "pass"], repeat)
    floor_cpu = CPU[-1]
    rows = [{"command": "python -c pass", "s": floor, "× floor": 1.0, "cpu s": floor_cpu, "cpu × floor": 1.0}]
    for label, argv in (("ptycho-bridge --help", [*PB, "--help"]), ("ptycho-bridge schema manifest", [*PB, "schema", "manifest"])):
        t = time_process(argv, repeat)
        rows.append({"command": label, "s": t, "× floor": t / floor, "cpu s": CPU[-1], "cpu × floor": CPU[-1] / floor_cpu})
    return rows


def era_rows(repeat: int, tmp: Path, frameworks: bool) -> list[dict]:
    floor = time_process([PYTHON, "-c", "pass"], repeat)
    rows = []
    for era, path in era_archives(tmp):
        ins = time_process([*PB, "inspect", "--json", str(path)], repeat)
        ins_cpu = CPU[-1]
        val = time_process([*PB, "validate", "--json", str(path)], repeat)
        row = {"era": era, "MB": path.stat().st_size / MB, "floor s": floor, "inspect s": ins, "validate s": val,
               "inspect × floor": ins / floor, "inspect cpu s": ins_cpu, "validate cpu s": CPU[-1]}
        fw = framework_path(era, path, tmp) if frameworks else None
        if fw is not None:
            t = time_process(fw, repeat)
            row.update({"framework s": t, "framework / inspect": t / ins, "framework cpu s": CPU[-1],
                        "framework / inspect (cpu)": CPU[-1] / ins_cpu})
        rows.append(row)
    return rows


def make_copies(tmp: Path, count: int) -> Path:
    if not (tmp / "b2-torch.zip").exists():
        era_archives(tmp)
    sources = [fixture(c) for c in ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1", "torch_N64_gs1", "torch_N64_gs2")]
    sources += [fixture("torch_N64_gs1", "lightning.ckpt"), tmp / "b2-tf.zip", tmp / "b2-torch.zip"]
    folder = tmp / "many"
    folder.mkdir()
    for i in range(count):
        src = sources[i % len(sources)]
        shutil.copyfile(src, folder / f"{i:04d}-{src.stem}{src.suffix}")
    return folder


def many_rows(count: int, repeat: int, tmp: Path, verbs: tuple[str, ...] = ("validate", "inspect")) -> list[dict]:
    folder = make_copies(tmp, count)
    rows = []
    for verb in verbs:
        times = {}
        for jobs in ("1", "2"):
            argv = [*PB, verb, "--jsonl", "-j", jobs, str(folder)]
            times[jobs] = time_process(argv, repeat, warmup=0)
            rows.append({"command": f"{verb} --jsonl -j {jobs} ({count} archives)", "s": times[jobs],
                         "archives/s": count / times[jobs], "cpu s": CPU[-1]})
        rows.append({"command": f"{verb}: -j 2 / -j 1 rate", "archives/s": times["1"] / times["2"]})
    return rows


def compile_bytecode() -> None:
    """Byte-compile this checkout first, as ``pip install`` does for an installed package.

    Why: an editable checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as on the CI machines) never
    caches bytecode, so every fresh process would recompile each module edited since the last
    cache — ~1.5 ms per module, 20 ms on a 100 ms command — which measures the checkout, not the tool."""
    import compileall

    for package in ("ptycho_bridge", "converters"):
        compileall.compile_dir(str(REPO / package), quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--many-repeat", type=int, default=5)
    ap.add_argument("--no-frameworks", action="store_true", help="skip the TF / torch load paths")
    ap.add_argument("--skip-many", action="store_true")
    ap.add_argument("--only-many", action="store_true")
    ap.add_argument("--many-verbs", default="validate,inspect", help="comma-separated: validate,inspect")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("PTYCHO_BRIDGE_NO_PROGRESS", "1")
    compile_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="pb-startup-"))
    try:
        for title, fn in (("start-up", lambda: startup_rows(args.repeat)),
                          ("per era, fresh process", lambda: era_rows(args.repeat, tmp, not args.no_frameworks)),
                          ("many archives", None if args.skip_many else lambda: many_rows(args.count, args.many_repeat, tmp, tuple(args.many_verbs.split(","))))):
            if fn is None or (args.only_many and title != "many archives"):
                continue
            before, t0 = load(), time.perf_counter()
            rows = fn()
            emit(f"{title} (median; load average 1/5/15 min before {before}, after {load()}; "
                 f"{time.perf_counter() - t0:.0f} s)", rows, args.json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
