"""Peak resident memory of ``inspect``, a full tensor read and ``convert`` vs archive size.

Each figure is the peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper whose only child
is the measured process), median of ``--repeat`` runs. Baselines show what the interpreter and its
imports cost before any archive byte is read; ``extra`` = peak − the baseline of the same process
kind before it reads anything (``inspect``/``convert``: ``import ptycho_bridge.cli``; ``tensors``:
``import ptycho_bridge``); h5py's own import (needed for TF and bridge-2 archives) is part of
``extra`` and shown in the baseline table.

Goal: inspect peak RSS < 2x archive size. A Python process with numpy and h5py alone is ~40-50 MB,
more than twice every fixture, so the absolute goal cannot hold for archives below ~25 MB; the
``extra`` column is the honest per-archive cost.

Run: ``.venv/bin/python benchmarks/memory.py [--repeat 3] [--json]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLI,
    MB,
    PYTHON,
    TF_CASES,
    TORCH_CASES,
    emit,
    fixture,
    median,
    migrate_fixture,
    peak_rss_mb,
    synthetic_large,
)

LOAD_ALL = (
    "import sys; from ptycho_bridge import read_archive; a = read_archive(sys.argv[1]);"
    "[dict(m.tensors) for m in a.models.values()]"
)


def rss(argv: list[str], repeat: int) -> float:
    return median([peak_rss_mb(argv) for _ in range(repeat)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = args.repeat
    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    base = {
        "python -c pass": rss([PYTHON, "-c", "pass"], r),
        "import numpy": rss([PYTHON, "-c", "import numpy"], r),
        "import numpy, h5py": rss([PYTHON, "-c", "import numpy, h5py"], r),
        "import ptycho_bridge, h5py": rss([PYTHON, "-c", "import ptycho_bridge, h5py"], r),
        "import ptycho_bridge.cli, h5py": rss([PYTHON, "-c", "import ptycho_bridge.cli, h5py"], r),
    }
    base["import ptycho_bridge"] = rss([PYTHON, "-c", "import ptycho_bridge"], r)
    base["import ptycho_bridge.cli"] = rss([PYTHON, "-c", "import ptycho_bridge.cli"], r)
    emit("baseline peak RSS (MB)", [{"process": k, "MB": v} for k, v in base.items()], args.json)
    cli_base = base["import ptycho_bridge.cli"]
    api_base = base["import ptycho_bridge"]

    archives = [(c, fixture(c)) for c in TF_CASES + TORCH_CASES]
    archives.append(("torch_N64_gs1 lightning.ckpt", fixture("torch_N64_gs1", "lightning.ckpt")))
    archives.append(("bridge-2 from tf_N64_gs1", migrate_fixture(fixture("tf_N64_gs1"), tmp / "a.zip")))
    archives.append(("bridge-2 synthetic N128 x4", synthetic_large(tmp / "big.zip")))
    rows = []
    for label, path in archives:
        size = path.stat().st_size / MB
        insp = rss([CLI, "inspect", "--json", str(path)], r)
        load = rss([PYTHON, "-c", LOAD_ALL, str(path)], r)
        rows.append({"archive": label, "archive MB": size, "inspect MB": insp, "inspect/archive": insp / size,
                     "inspect extra MB": insp - cli_base, "extra/archive": (insp - cli_base) / size,
                     "goal <2x": "met" if insp < 2 * size else "missed",
                     "all tensors MB": load, "tensors extra MB": load - api_base})
    emit("peak RSS: inspect and full tensor read (MB, median)", rows, args.json)

    try:
        from ptycho_bridge.ops.convert import convert_archive  # noqa: F401
    except ImportError:
        print("convert: ptycho_bridge.ops.convert.convert_archive not available, skipped")
        return
    conv = []
    for case in ("tf_N64_gs1", "tf_N64_gs2"):  # tf_N128_gs1 is refused by design
        src = fixture(case)
        peak = rss([CLI, "convert", str(src), "--to", "pytorch", "-o", str(tmp / f"{case}.pt.zip"), "--force"], r)
        conv.append({"source": case, "archive MB": src.stat().st_size / MB, "convert MB": peak,
                     "convert extra MB": peak - cli_base, "extra/archive": (peak - cli_base) / (src.stat().st_size / MB)})
    emit("peak RSS: convert tf -> pytorch (MB, median)", conv, args.json)


if __name__ == "__main__":
    main()
