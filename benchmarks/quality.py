"""What the trained demo costs: the quality figures against the reconstruction they judge, and one training step.

Why: ``reconstruct`` now computes SSIM/PSNR/FRC whenever a reference exists (the demo's ``objectGuess``); this
prints that cost as a share of the reconstruction measured in the same run. With ``--train-steps K`` it also
times K steps of ``scripts/train_sample_model.py``'s loop (batch 16) against one inference pass of the same batch
(same process, same threads) and extrapolates the full training (``training.json``'s step count).

    PYTHONPATH=. .venv/bin/python benchmarks/quality.py [--repeat 5] [--train-steps 20] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import median, time_call  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from ptycho_bridge.ops.reconstruct.compare import quality_for
    from ptycho_bridge.ops.reconstruct.pipeline import reconstruct
    from ptycho_bridge.ops.sample import trained_record, write_held_out_dataset, write_trained_sample

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        archive, scan = write_trained_sample(Path(tmp) / "wts.h5.zip"), write_held_out_dataset(Path(tmp) / "d.npz")
        holder = {}

        def rec() -> None:
            holder["r"] = reconstruct(archive, scan, "onnx", threads=args.threads, with_object_guess=True)

        t_rec = time_call(rec, args.repeat)
        r = holder["r"]
        t_q = time_call(lambda: quality_for(r.object, object_guess=r.object_guess, com_xy=r.canvas["com_xy"]),
                        args.repeat)
        rows.append({"what": "reconstruct held-out scan (onnx, 144 patterns)", "median_s": round(t_rec, 4)})
        rows.append({"what": "quality figures (SSIM/PSNR/FRC)", "median_s": round(t_q, 4),
                     "ratio_to_reconstruct": round(t_q / t_rec, 4)})

    if args.train_steps:
        spec = importlib.util.spec_from_file_location("train", REPO / "scripts" / "train_sample_model.py")
        train = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(train)
        import numpy as np
        import torch

        from converters.pytorch.network import build_module
        from ptycho_bridge.ops import simulate
        from ptycho_bridge.spec.reassembly import NORM_EPSILON, centre_mask

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        module = build_module(train.sample_spec()).train()
        opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        probe = torch.from_numpy(simulate.trained_probe(64))
        denom = torch.from_numpy(centre_mask(64) + NORM_EPSILON)
        xb = torch.from_numpy(np.abs(np.random.default_rng(0).standard_normal((16, 1, 64, 64))).astype(np.float32))
        scale = math.sqrt(simulate.NPHOTONS) / (64 / 2)  # the script's intensity_scale

        def step() -> None:
            train.train_step(module, opt, xb, probe, denom, scale)

        def infer() -> None:
            with torch.no_grad():
                module(xb)

        times = []
        step()
        for _ in range(args.train_steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        t_step, t_inf = median(times), time_call(infer, max(3, args.train_steps // 4))
        steps = trained_record()["steps"]
        rows.append({"what": "training step (batch 16, forward+physics+backward+Adam)", "median_s": round(t_step, 4),
                     "ratio_to_inference_pass": round(t_step / t_inf, 3),
                     "extrapolated_training_s": round(t_step * steps, 1), "steps": steps})
        rows.append({"what": "inference pass (batch 16, no grad)", "median_s": round(t_inf, 4)})
    load = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps({"table": "quality", "load_average": load, "rows": rows}))
    else:
        print(f"load average {load}")
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
