"""Atomic writes under SIGKILL: the destination is the previous complete archive or a new complete one.

A child process rewrites a large bridge-2 archive in a loop (``write_archive`` with a 32 MiB legacy
member, ``force=True``); the parent waits until the child's temporary file exists — i.e. a write
is in progress — and SIGKILLs it. The destination must then validate, and be either the archive
that was there before or one the child finished. Temporary files (``.wts.h5.zip.*.partial``) may
remain after SIGKILL, since no cleanup code can run; they are never mistaken for the archive
(docs/security.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from ptycho_bridge.errors import OutputExistsError
from ptycho_bridge.io.atomic import atomic_write
from ptycho_bridge.ops.report import validate_path
from ptycho_bridge.ops.sample import write_sample
from tests._support import REPO

BLOB = 32 * 1024 * 1024

WRITER = f"""
import sys
import numpy as np
from ptycho_bridge.ops.sample import sample_params, sample_tensors
from ptycho_bridge.spec.network import tf_padded_size, tf_spec
from ptycho_bridge.formats.bridge2.write import ModelToWrite, write_archive

dest = sys.argv[1]
params = sample_params()
spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
               amp_activation="sigmoid", padded_size=tf_padded_size(64, 1, 4, 10))
model = ModelToWrite(spec, sample_tensors(spec))
blob = np.random.default_rng(0).bytes({BLOB})
i = 0
print("ready", flush=True)
while True:
    write_archive(dest, force=True, backend="tensorflow", source_era="sample", models={{"diffraction_to_obj": model}},
                  params=params, intensity_scale=params["intensity_scale"],
                  legacy_members={{"extra/blob.pth": blob + i.to_bytes(8, "little")}})
    print("wrote", i, flush=True)
    i += 1
"""


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".wts.h5.zip.*.partial"))


def _kill_mid_write(dest: Path, *, completed_writes: int, rng: random.Random) -> int:
    """Start the writer, let it finish ``completed_writes`` archives, SIGKILL it during the next one."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(dest)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        for _ in range(completed_writes):
            assert child.stdout.readline().startswith("wrote")
        known = set(_partials(dest.parent))
        deadline = time.monotonic() + 60
        while not (set(_partials(dest.parent)) - known):  # a new temp file: a write is under way
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, 0.01))
        child.send_signal(signal.SIGKILL)
        return child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("completed_writes", [0, 1, 2])
def test_sigkill_mid_write_leaves_a_complete_archive(tmp_path: Path, completed_writes: int) -> None:
    dest = tmp_path / "wts.h5.zip"
    write_sample(dest)
    before = dest.read_bytes()
    code = _kill_mid_write(dest, completed_writes=completed_writes, rng=random.Random(completed_writes))
    assert code == -signal.SIGKILL

    report = validate_path(dest)
    assert report["valid"], report["errors"]
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
    # SIGKILL leaves the in-progress temp file behind (no code runs); it is never the archive itself
    leftovers = _partials(tmp_path)
    assert len(leftovers) <= 1
    assert {p.name for p in tmp_path.iterdir()} == {"wts.h5.zip"} | {p.name for p in leftovers}
    if leftovers and completed_writes == 0:
        assert dest.read_bytes() == before  # killed during the first write: the previous archive, untouched
    else:
        assert "extra/blob.pth" in names  # an archive the child finished


def test_error_inside_write_leaves_no_temp_file_and_keeps_previous(tmp_path: Path) -> None:
    dest = tmp_path / "wts.h5.zip"
    dest.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_write(dest, force=True) as fh:
        fh.write(b"half an archive")
        raise RuntimeError("writer failed")
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["wts.h5.zip"]
    with pytest.raises(OutputExistsError), atomic_write(dest) as fh:
        fh.write(b"x")
    assert dest.read_bytes() == b"previous"


def test_check_runs_on_the_finished_file_and_a_failure_leaves_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ptycho_bridge.io.atomic import atomic_write

    seen = []

    def check(tmp):  # type: ignore[no-untyped-def]
        seen.append(tmp.read_bytes())
        raise ValueError("bad")

    target = tmp_path / "out.bin"
    try:
        with atomic_write(target, check=check) as fh:
            fh.write(b"data")
    except ValueError:
        pass
    assert seen == [b"data"] and list(tmp_path.iterdir()) == []
