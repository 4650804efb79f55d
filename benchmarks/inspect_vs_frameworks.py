"""``ptycho-bridge inspect`` in a fresh process vs the framework load paths upstream uses.

Goals (docs/performance.md): inspect >= 20x faster than the TensorFlow path, >= 3x faster than
``import torch`` + ``torch.load``. Every figure is a median of ``--repeat`` fresh processes (one
unrecorded warm-up run first, so the page cache is warm for everyone); ratios come from this run.

Baselines (what exactly is timed, each in a fresh ``python`` of the same venv):

* ``tf-import``: ``import tensorflow`` alone — a lower bound of any upstream TF load.
* ``tf-path``: ``import tensorflow, keras, h5py``; extract ``diffraction_to_obj/model.keras`` from
  the archive to a temp dir (as ``ModelManager`` does), unzip it, parse ``config.json`` and read
  every dataset of ``model.weights.h5`` with h5py. Upstream additionally rebuilds the Keras graph
  with its custom layers (unavailable here) and loads the autoencoder too, so its real time is
  higher: this baseline flatters upstream.
* ``torch-import``: ``import torch`` alone.
* ``torch-path``: ``import torch`` + ``torch.load(model.pth, weights_only=True)``. The ``model.pth``
  is the fixture's state dict decoded by our safe reader and re-saved with ``torch.save`` to a temp
  file (same tensors, names and container format): archive content itself never reaches
  ``torch.load``.

Run: ``.venv/bin/python benchmarks/inspect_vs_frameworks.py [--repeat 7] [--json]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CLI,
    PYTHON,
    TF_CASES,
    TORCH_CASES,
    emit,
    fixture,
    machine_facts,
    migrate_fixture,
    time_call,
    time_process,
)

TF_PATH = r"""
import json, os, sys, tempfile, zipfile
import tensorflow, keras, h5py
with tempfile.TemporaryDirectory() as d:
    with zipfile.ZipFile(sys.argv[1]) as z:
        z.extract("diffraction_to_obj/model.keras", d)
    with zipfile.ZipFile(os.path.join(d, "diffraction_to_obj", "model.keras")) as k:
        k.extractall(os.path.join(d, "k"))
    json.load(open(os.path.join(d, "k", "config.json")))
    arrays = []
    with h5py.File(os.path.join(d, "k", "model.weights.h5"), "r") as f:
        f.visititems(lambda n, o: arrays.append(o[()]) if isinstance(o, h5py.Dataset) else None)
"""
TORCH_PATH = "import sys, torch; torch.load(sys.argv[1], weights_only=True)"


def torch_pth(case: str, out: Path) -> Path:
    """The fixture's ``model.pth`` state dict, decoded safely and re-saved by ``torch.save``."""
    import torch

    from converters.pytorch.torchzip import read_torch
    from ptycho_bridge.io.safezip import SafeZip

    with SafeZip(fixture(case)) as zf:
        sd = read_torch(zf, "diffraction_to_obj/model.pth")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, out)
    return out


def tf_breakdown(path: Path, repeat: int) -> dict[str, float]:
    """In-process parts of a TF-era inspect: inflating each model.keras dominates the work."""
    from ptycho_bridge import read_archive
    from ptycho_bridge.io.safezip import SafeZip

    def inflate(member: str) -> None:
        with SafeZip(path) as zf:
            zf.read(member)

    return {
        "read_archive ms": time_call(lambda: read_archive(path), repeat) * 1e3,
        "inflate d2o model.keras ms": time_call(lambda: inflate("diffraction_to_obj/model.keras"), repeat) * 1e3,
        "inflate autoencoder model.keras ms": time_call(lambda: inflate("autoencoder/model.keras"), repeat) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = args.repeat
    from ptycho_bridge import read_archive
    from ptycho_bridge.ops.report import inspect_report

    tmp = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    emit("machine", [machine_facts()], args.json)
    floor = {
        "python -c pass": time_process([PYTHON, "-c", "pass"], r),
        "import numpy": time_process([PYTHON, "-c", "import numpy"], r),
        "import numpy, h5py": time_process([PYTHON, "-c", "import numpy, h5py"], r),
        "import ptycho_bridge.cli": time_process([PYTHON, "-c", "import ptycho_bridge.cli"], r),
        "import tensorflow": time_process([PYTHON, "-c", "import tensorflow"], r),
        "import torch": time_process([PYTHON, "-c", "import torch"], r),
    }
    emit("fresh-process floors (s, median)", [{"what": k, "s": v} for k, v in floor.items()], args.json)

    rows = []
    archives = [(c, fixture(c)) for c in TF_CASES + TORCH_CASES]
    archives.append(("torch_N64_gs1 lightning.ckpt", fixture("torch_N64_gs1", "lightning.ckpt")))
    archives += [(f"bridge-2 from {c}", migrate_fixture(fixture(c), tmp / f"{c}.bridge.zip"))
                 for c in ("tf_N64_gs1", "torch_N64_gs1")]
    for label, path in archives:
        cli = time_process([CLI, "inspect", "--json", str(path)], r)
        api = time_call(lambda path=path: inspect_report(read_archive(path)), r)
        row = {"archive": label, "MB": path.stat().st_size / 1e6, "inspect fresh s": cli, "API in-process s": api}
        case = label.split()[0] if not label.startswith("bridge") else label.split()[-1]
        if case in TF_CASES and not label.startswith("bridge"):
            tf = time_process([PYTHON, "-c", TF_PATH, str(path)], r)
            row.update({"framework": "tf-path", "framework s": tf, "speedup": tf / cli,
                        "vs import tf alone": floor["import tensorflow"] / cli, "goal": ">=20x"})
        elif case in TORCH_CASES and not label.startswith("bridge") and path.name == "wts.h5.zip":
            pth = torch_pth(case, tmp / f"{case}.pth")
            tl = time_process([PYTHON, "-c", TORCH_PATH, str(pth)], r)
            row.update({"framework": "torch-path", "framework s": tl, "speedup": tl / cli,
                        "vs import torch alone": floor["import torch"] / cli, "goal": ">=3x"})
        rows.append(row)
    emit("inspect vs framework load (fresh processes, median s)", rows, args.json)
    emit("where a TF-era inspect spends its in-process time (median ms)",
         [{"archive": c, **tf_breakdown(fixture(c), r)} for c in TF_CASES], args.json)


if __name__ == "__main__":
    main()
