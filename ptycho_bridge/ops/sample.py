"""The demo archives and scans, so the README's first command needs no external data.

Why: the upstream fixtures live outside the repository (``../shared``) and must never be copied in.
``ptycho-bridge sample`` writes, by default, the **trained** sample model (package data in
``ptycho_bridge/data/sample-trained/``: a torch archive trained by ``scripts/train_sample_model.py``, with its
``training.json`` and loss curve) and a held-out simulated scan of another object
(:func:`ptycho_bridge.ops.simulate.held_out_scan`), so the demo shows a real reconstruction. With
``--untrained`` it writes what it wrote before (tests rely on it): a bridge-2 archive (N=64, gridsize 1,
n_filters_scale 1, TF network layout) with seeded He-normal weights and a seeded probe, and its small scan,
identical on every machine.
"""

from __future__ import annotations

import math
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive
from ptycho_bridge.errors import ChecksumError
from ptycho_bridge.io.atomic import atomic_write
from ptycho_bridge.ops.simulate import far_field, held_out_scan
from ptycho_bridge.spec.network import expected_tensors, tf_padded_size, tf_spec

SAMPLE_SEED = 20261128
DATASET_NAME = "dataset.npz"
DATASET_SIDE = 8  # 8 x 8 = 64 scan positions
DATASET_STEP = 6.0  # px between positions (patches of the stitch crop, 20 px, overlap)
TRAINED_DIR = ("data", "sample-trained")  # package data, below ptycho_bridge/


def sample_params(N: int = 64, gridsize: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(SAMPLE_SEED + 1)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    disk = (np.hypot(xx, yy) < N / 4).astype(np.float32)
    phase = 0.5 * (xx**2 + yy**2) / N**2 + 0.05 * rng.standard_normal((N, N))
    probe = (disk * np.exp(1j * phase)).astype(np.complex64)[..., None]
    return {
        "N": N, "gridsize": gridsize, "n_filters_scale": 1, "object.big": True, "probe.big": True,
        "pad_object": True, "amp_activation": "sigmoid", "offset": 4, "max_position_jitter": 10,
        "intensity_scale": float(math.sqrt(1e9) / (N / 2)), "intensity_scale.trainable": True,
        "nphotons": 1e9, "probe": probe, "architecture": "cnn", "_version": "1.0",
    }


def sample_tensors(spec) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(SAMPLE_SEED)
    out = {}
    for name, shape in expected_tensors(spec).items():
        if name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            out[name] = (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            out[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return out


def write_sample(path: str | Path, *, force: bool = False) -> Path:
    params = sample_params()
    spec = tf_spec(
        N=params["N"], gridsize=params["gridsize"], n_filters_scale=1, object_big=True, probe_big=True,
        pad_object=True, amp_activation="sigmoid",
        padded_size=tf_padded_size(params["N"], params["gridsize"], params["offset"], params["max_position_jitter"]),
    )
    model = ModelToWrite(spec, sample_tensors(spec), notes=["deterministic demo weights (seeded He-normal), not a trained model"])
    return write_archive(
        path, force=force, backend="tensorflow", source_era="sample",
        models={"diffraction_to_obj": model}, params=params, intensity_scale=params["intensity_scale"],
    )


def sample_dataset(N: int = 64) -> dict[str, np.ndarray]:
    """A small simulated scan in upstream's dataset format, matching the sample archive (N=64).

    64 positions on a jittered 8 x 8 grid over a smooth complex object; each pattern is the far-field
    amplitude ``|FFT(probe · object patch)|`` of the sample probe (no noise). Seeded: identical everywhere.
    """
    rng = np.random.default_rng(SAMPLE_SEED + 2)
    probe = sample_params(N)["probe"][..., 0]
    margin = N // 2 + 4
    side = int(2 * margin + DATASET_STEP * (DATASET_SIDE - 1)) + 1
    yy, xx = np.mgrid[:side, :side] / side
    amp = 0.75 + 0.2 * np.cos(6 * np.pi * xx) * np.cos(4 * np.pi * yy)
    phase = 0.8 * np.exp(-((xx - 0.55) ** 2 + (yy - 0.45) ** 2) / 0.05)
    obj = (amp * np.exp(1j * phase)).astype(np.complex64)
    k = np.arange(DATASET_SIDE * DATASET_SIDE)
    x = margin + DATASET_STEP * (k % DATASET_SIDE) + rng.uniform(-1, 1, k.size)
    y = margin + DATASET_STEP * (k // DATASET_SIDE) + rng.uniform(-1, 1, k.size)
    patches = np.stack([obj[cy - N // 2:cy + N // 2, cx - N // 2:cx + N // 2]
                        for cx, cy in zip(np.rint(x).astype(int), np.rint(y).astype(int))])
    patterns = far_field(probe, patches).astype(np.float32)
    return {"diffraction": patterns, "xcoords": x, "ycoords": y, "xcoords_start": x.copy(), "ycoords_start": y.copy(),
            "probeGuess": probe.astype(np.complex64), "objectGuess": obj}


def _write_npz(path: str | Path, arrays: dict[str, np.ndarray], *, force: bool) -> Path:
    """``arrays`` as an uncompressed ``.npz`` at ``path`` (atomically)."""
    target = Path(path)
    with atomic_write(target, force=force) as fh:
        np.savez(fh, **arrays)
    return target


def write_sample_dataset(path: str | Path, *, force: bool = False) -> Path:
    """Write :func:`sample_dataset` as an uncompressed ``.npz`` (atomically)."""
    return _write_npz(path, sample_dataset(), force=force)


# -- the trained sample (package data) ------------------------------------------------------------
def _trained_file(name: str) -> Any:
    return resources.files("ptycho_bridge").joinpath(*TRAINED_DIR, name)


def trained_record() -> dict[str, Any]:
    """``training.json`` of the bundled trained model: seed, data, steps, wall time, loss curve, sha256."""
    return json.loads(_trained_file("training.json").read_text(encoding="utf-8"))


def trained_archive_bytes() -> bytes:
    """The bundled trained archive, checked against the sha256 its training record holds."""
    data = _trained_file("wts.h5.zip").read_bytes()
    want = trained_record()["archive_sha256"]
    if hashlib.sha256(data).hexdigest() != want:
        raise ChecksumError("the bundled trained sample differs from its training record (reinstall the package)",
                            member="ptycho_bridge/data/sample-trained/wts.h5.zip", field="archive_sha256")
    return data


def write_trained_sample(path: str | Path, *, force: bool = False) -> Path:
    """Copy the bundled trained archive to ``path`` (atomically)."""
    target = Path(path)
    with atomic_write(target, force=force) as fh:
        fh.write(trained_archive_bytes())
    return target


def write_held_out_dataset(path: str | Path, *, force: bool = False) -> Path:
    """Write the held-out scan (:func:`~ptycho_bridge.ops.simulate.held_out_scan`) as an uncompressed ``.npz``."""
    return _write_npz(path, held_out_scan().as_dataset(), force=force)
