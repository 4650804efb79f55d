#!/usr/bin/env python
"""Train the bundled sample model the way PtychoPINN trains without labels, on a seeded simulated scan.

Why a script in the repository: the archive ``ptycho-bridge sample`` writes (``ptycho_bridge/data/``) must be
reproducible by anyone, with its seed, data, steps, loss curve and wall time recorded beside it.

What it does (torch, CPU; ../shared/docs/upstream-architecture.md for the network and the physics tail):

- data: :func:`ptycho_bridge.ops.simulate.training_object` scanned with the sample probe
  (:func:`~ptycho_bridge.ops.simulate.trained_probe`), Poisson counts at ``nphotons`` = 1e9, then upstream's
  dataset normalisation ``X_norm = s·X`` with ``s = sqrt((N/2)² / mean Σ X²)`` over the whole scan;
- network: our torch module of the PtychoPINN CNN (:mod:`converters.pytorch.network`), N=64, gridsize 1,
  n_filters_scale 1, sigmoid amplitude, ``probe_big=False`` (the probe is zero outside the centre square);
- physics tail of the autoencoder (gridsize 1, zero offsets): the TF reassembly ``obj / (M + 0.001)``,
  illumination ``× probe``, far field ``|fftshift(fft2(·))| / N`` (``PadAndDiffractLayer``, pad=False), times
  the intensity scale ``sqrt(nphotons)/(N/2)`` (``IntensityScaler_inv``, not trained here);
- loss: upstream's default weights (nll 1, MAE 0, real-space 0): the Poisson negative log-likelihood of the
  intensities, ``mean(pred − true·log(pred))`` with ``pred = (scale·|Ψ|/N)²``, ``true = (scale·X_norm)²``;
  Adam, lr 1e-3, batch 16, patterns drawn by a seeded permutation per epoch.

Run it from the repository root (``PYTHONPATH=.``); ``--steps`` sizes it (the default fits about ten minutes on
a quiet 2-core machine). Outputs in ``--out``: ``wts.h5.zip`` (written by ``ptycho_bridge.save_torch``),
``training.json`` (seed, data, steps, wall time, the loss curve) and ``loss.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import ptycho_bridge as pb  # noqa: E402
from converters.pytorch.network import build_module  # noqa: E402
from ptycho_bridge.ops import simulate  # noqa: E402
from ptycho_bridge.spec.network import torch_spec  # noqa: E402
from ptycho_bridge.spec.reassembly import NORM_EPSILON, centre_mask  # noqa: E402

N = 64
DEFAULT_OUT = REPO / "ptycho_bridge" / "data" / "sample-trained"


def sample_spec():  # type: ignore[no-untyped-def]
    return torch_spec(N=N, gridsize=1, n_filters_scale=1, object_big=True, probe_big=False,
                      amp_activation="sigmoid")


def physics(obj: torch.Tensor, probe: torch.Tensor, denom: torch.Tensor, scale: float) -> torch.Tensor:
    """Predicted intensities ``(scale·|fftshift(fft2(probe · obj/(M+0.001)))|/N)²`` for ``obj`` [B,1,N,N]."""
    psi = (obj / denom) * probe
    far = torch.fft.fftshift(torch.fft.fft2(psi), dim=(-2, -1))
    return (far.real ** 2 + far.imag ** 2) * (scale * scale / (N * N))


def poisson_nll(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Upstream's loss on intensities: ``pred − true·log(pred)`` (mean; a tiny floor keeps log finite)."""
    return (pred - true * torch.log(pred + 1e-6)).mean()


def train_step(module: torch.nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, probe: torch.Tensor,
               denom: torch.Tensor, scale: float) -> float:
    """One Adam step on the Poisson NLL of the physics-predicted intensities of batch ``xb``; the loss."""
    loss = poisson_nll(physics(module(xb), probe, denom, scale), (scale * xb) ** 2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.item())


def save_curve(path: Path, steps: list[int], losses: list[float], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, losses, lw=1.2, marker=".")
    ax.set_xlabel("step (batch of 16)")
    ax.set_ylabel("Poisson NLL, mean of 25 steps")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=simulate.SIM_SEED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--object-size", type=int, default=320)
    ap.add_argument("--step-px", type=float, default=3.0, help="scan step of the training scan")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_start = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()

    probe_np = simulate.trained_probe(N)
    obj_np = simulate.training_object(args.object_size)
    scan = simulate.simulate_scan(obj_np, probe_np, step=args.step_px, seed=args.seed + 2)
    energies = np.sum(scan.diffraction.astype(np.float64) ** 2, axis=(1, 2))
    s = float(np.float32(math.sqrt((N / 2) ** 2 / energies.mean())))  # upstream's normalize_data
    x_all = torch.from_numpy((np.float32(s) * scan.diffraction)[:, None])
    intensity_scale = math.sqrt(simulate.NPHOTONS) / (N / 2)
    t_data = time.perf_counter() - t0

    spec = sample_spec()
    module = build_module(spec).train()
    probe = torch.from_numpy(probe_np)
    denom = torch.from_numpy(centre_mask(N) + NORM_EPSILON)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    rng = np.random.default_rng(args.seed + 4)
    order, pos, batch = rng.permutation(len(x_all)), 0, 16
    curve_steps, curve, window = [], [], []
    for step in range(1, args.steps + 1):
        if pos + batch > len(order):
            order, pos = rng.permutation(len(x_all)), 0
        xb = x_all[order[pos:pos + batch]]
        pos += batch
        window.append(train_step(module, opt, xb, probe, denom, intensity_scale))
        if step % 25 == 0 or step == args.steps:
            curve_steps.append(step)
            curve.append(float(np.mean(window)))
            window = []
            if step % 250 == 0 or step == args.steps:
                print(f"step {step}/{args.steps} loss {curve[-1]:.6g} ({time.perf_counter() - t0:.0f} s)", flush=True)
    module.eval()
    wall = time.perf_counter() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    params = {"N": N, "gridsize": 1, "n_filters_scale": 1, "object.big": True, "probe.big": False,
              "amp_activation": "sigmoid", "nphotons": simulate.NPHOTONS, "intensity_scale.trainable": False,
              "nll_weight": 1.0, "mae_weight": 0.0, "realspace_weight": 0.0, "learning_rate": 1e-3,
              "batch_size": batch, "probe": probe_np[..., None]}
    archive = pb.save_torch(args.out / "wts.h5.zip", module, intensity_scale=intensity_scale, params=params,
                            force=args.force)
    record = {
        "what": "the sample model ptycho-bridge sample writes, trained by scripts/train_sample_model.py",
        "seed": args.seed, "steps": args.steps, "batch_size": batch, "optimizer": "Adam", "learning_rate": 1e-3,
        "loss": "Poisson NLL on intensities, mean(pred - true*log(pred)); weights nll 1, mae 0, realspace 0",
        "intensity_scale": intensity_scale, "intensity_scale_trainable": False, "norm_scale_s": s,
        "data": {"object": f"simulate.training_object({args.object_size}) (seed {simulate.SIM_SEED + 1})",
                 "probe": "simulate.trained_probe(64)", "scan_step_px": args.step_px, "patterns": int(len(x_all)),
                 "nphotons": simulate.NPHOTONS, "noise": "Poisson", "scan_seed": args.seed + 2,
                 "held_out": "simulate.held_out_scan(): a Siemens star, never seen in training"},
        "network": {"N": N, "gridsize": 1, "n_filters_scale": 1, "probe_big": False, "amp_activation": "sigmoid",
                    "parameters": int(sum(p.numel() for p in module.parameters()))},
        "wall_time_s": round(wall, 1), "data_time_s": round(t_data, 1), "threads": args.threads,
        "load_average_at_start": load_start, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "loss_curve": {"every": 25, "steps": curve_steps, "mean_loss": [round(v, 3) for v in curve]},
        "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    save_curve(args.out / "loss.png", curve_steps, curve,
               f"sample model: {args.steps} steps, {len(x_all)} patterns, {wall / 60:.1f} min on {args.threads} threads")
    print(f"wrote {archive} in {wall:.0f} s (data {t_data:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
