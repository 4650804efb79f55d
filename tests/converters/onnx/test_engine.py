"""ONNX Runtime engine (converters/onnx/engine.py): the protocol functions, session feeds and their refusals.

The light-import promise is checked in a fresh interpreter: importing the engine (or the exporter)
must leave onnx and onnxruntime unimported, so the engine registry can list it for free.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests._support import REPO


def test_importing_the_backend_imports_no_framework() -> None:
    script = textwrap.dedent(
        """
        import sys
        import converters.onnx.engine, converters.onnx.export
        import converters.onnx.graph, converters.onnx.layout, converters.onnx.network, converters.onnx.reassembly
        frameworks = ("onnx", "onnxruntime", "torch", "tensorflow", "keras")
        print(sorted(m for m in sys.modules if m.split(".")[0] in frameworks))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from converters.onnx import engine  # noqa: E402
from converters.onnx.engine import make_session, run_onnx, run_session, session_options  # noqa: E402
from converters.onnx.export import build_onnx  # noqa: E402
from ptycho_bridge.formats.detect import read_archive  # noqa: E402
from ptycho_bridge.spec.conventions import golden_canonical_input  # noqa: E402


def _load(fixtures_dir: Path, case: str):
    arch = read_archive(fixtures_dir / case / "wts.h5.zip")
    golden = dict(np.load(fixtures_dir / case / "golden.npz"))
    return arch, golden, golden_canonical_input(golden, arch.backend, arch.intensity_scale)


def test_session_options_threads_and_no_spinning() -> None:
    opts = session_options(3)
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(None).intra_op_num_threads == (os.cpu_count() or 1)


def test_protocol_build_run_equals_run_onnx(fixtures_dir: Path) -> None:
    arch, _, x = _load(fixtures_dir, "torch_N64_gs1")
    spec, tensors = arch.primary.spec, arch.primary.tensors
    assert engine.refusals(spec) == []
    out = engine.run(engine.build(spec, tensors, threads=1), x)
    assert out.dtype == np.complex64 and out.shape == (x.shape[0], spec.channels_out, spec.N, spec.N)
    np.testing.assert_array_equal(out, run_onnx(build_onnx(spec, tensors), x, threads=1))


def test_run_refuses_misuse(fixtures_dir: Path) -> None:
    arch, golden, x = _load(fixtures_dir, "tf_N64_gs2")
    core = make_session(build_onnx(arch.primary.spec, arch.primary.tensors))
    with pytest.raises(ValueError, match="no reassembly stage"):
        run_session(core, x, positions=golden["positions"])
    full = make_session(build_onnx(arch.primary.spec, arch.primary.tensors, reassembly=True))
    with pytest.raises(ValueError, match="pass positions"):
        run_session(full, x)
    with pytest.raises(ValueError, match=r"positions must be \[B, 1, 2, C\]"):
        run_session(full, x, positions=golden["positions"][:, :, :1])
    big = np.repeat(x, 4, axis=0)  # B·C = 64: upstream's batch-collapsing path
    with pytest.raises(ValueError, match="batch-collapsing"):
        run_session(full, big, positions=np.repeat(golden["positions"], 4, axis=0))
