"""``convert`` TensorFlow -> PyTorch end to end, and where its time goes.

Per TF fixture (medians of ``--repeat``; one unrecorded warm-up each):

Sources: the TF fixtures that convert (``tf_N128_gs1`` is refused by design; see ``CONVERTIBLE``).

* ``CLI fresh s``: ``ptycho-bridge convert ARCHIVE --to pytorch -o OUT --force`` in a fresh process.
* ``API s``: :func:`ptycho_bridge.ops.convert.convert_archive` in this process.
* phases of the same call: ``read_archive``; ``plan_conversion``; ``target_tensors`` (loads every
  canonical tensor of the primary model); ``write_conversion`` (builds the torch legacy members and
  writes the bridge-2 zip atomically; the tensors are cached by then, so this is the write alone).

Run: ``.venv/bin/python benchmarks/convert.py [--repeat 7] [--json]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CLI, MB, emit, fixture, median, time_call, time_process

# tf_N128_gs1 is refused by design (TF's outer block is 16 wide at N=128, torch's 32): not timed.
CONVERTIBLE = ("tf_N64_gs1", "tf_N64_gs2")


def phases(src: Path, out: Path, repeat: int) -> dict[str, float]:
    from ptycho_bridge import read_archive
    from ptycho_bridge.ops.convert import (
        plan_conversion,
        target_tensors,
        write_conversion,
    )

    samples: dict[str, list[float]] = {"read_archive": [], "plan": [], "tensors": [], "write": []}
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        arch = read_archive(src)
        t1 = time.perf_counter()
        plan = plan_conversion(arch, "pytorch")
        t2 = time.perf_counter()
        target_tensors(arch.primary, plan)
        t3 = time.perf_counter()
        write_conversion(arch, plan, out, force=True)
        t4 = time.perf_counter()
        if i:  # first round is the warm-up
            for key, dt in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                samples[key].append(dt)
    return {f"{k} ms": median(v) * 1e3 for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        from ptycho_bridge.ops.convert import convert_archive
    except ImportError:
        print("ptycho_bridge.ops.convert.convert_archive is not available: nothing to measure")
        return

    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    rows = []
    for case in CONVERTIBLE:
        src = fixture(case)
        out = tmp / f"{case}.torch.zip"
        cli = time_process([CLI, "convert", str(src), "--to", "pytorch", "-o", str(out), "--force"], args.repeat)
        api = time_call(lambda src=src, out=out: convert_archive(src, "pytorch", out, force=True), args.repeat)
        row = {"source": case, "in MB": src.stat().st_size / MB, "out MB": out.stat().st_size / MB,
               "CLI fresh s": cli, "API s": api}
        row.update(phases(src, out, args.repeat))
        rows.append(row)
    emit("convert tf -> pytorch (median)", rows, args.json)


if __name__ == "__main__":
    main()
