"""``parity``: the stderr verdict, ``--plot``, no empty table, one error line, missing engines named with pip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.schema import schema_errors
from tests._support import REPO

pytest.importorskip("onnxruntime")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTYCHO_BRIDGE_NO_PROGRESS", "1")


def test_verdict_on_stderr_last_and_never_in_json(fixtures_dir: Path) -> None:
    d = fixtures_dir / "tf_N64_gs1"
    args = ["parity", str(d / "wts.h5.zip"), "--engines", "onnx", "--input", str(d / "golden.npz")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines()[-1] == "1 passed, 0 failed"
    assert "passed" not in r.stdout
    r = CliRunner().invoke(main, args + ["--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)  # stdout is the JSON document alone
    assert schema_errors("parity-report", doc) == []
    assert r.stderr.strip() == "1 passed, 0 failed"


def test_nothing_to_compare_prints_no_empty_table_and_the_reason_once(fixtures_dir: Path) -> None:
    r = CliRunner().invoke(main, ["parity", str(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip"), "--random",
                                  "--engines", "onnx"])
    assert r.exit_code == 1
    assert "┏" not in r.stdout and "reference" not in r.stdout  # no header-only table
    text = r.stdout + r.stderr
    assert text.count("nothing to compare") == 1
    assert "error: nothing to compare" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "0 passed, 0 failed"


def test_plot_writes_a_png_of_each_comparison(fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    d = fixtures_dir / "tf_N64_gs1"
    png = tmp_path / "parity.png"
    r = CliRunner().invoke(main, ["parity", str(d / "wts.h5.zip"), "--engines", "onnx", "--input",
                                  str(d / "golden.npz"), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert f"plot: {png}" in r.stderr


def _without(packages: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter where ``packages`` look uninstalled (find_spec answers None, imports fail)."""
    code = textwrap.dedent(f"""
        import importlib.util, sys
        hidden = {packages!r}
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a, **k: None if name.split('.')[0] in hidden else real(name, *a, **k)
        for name in hidden:
            sys.modules[name] = None  # import raises ImportError, as on a core install
        from ptycho_bridge.cli import main
        main({argv!r}, prog_name="ptycho-bridge")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PTYCHO_BRIDGE_NO_PROGRESS": "1"})


def test_missing_matplotlib_is_one_error_line_before_any_work(fixtures_dir: Path, tmp_path: Path) -> None:
    d = fixtures_dir / "tf_N64_gs1"
    png = tmp_path / "p.png"
    proc = _without(["matplotlib"], ["parity", str(d / "wts.h5.zip"), "--engines", "onnx", "--input",
                                     str(d / "golden.npz"), "--plot", str(png)])
    assert proc.returncode == 1
    assert proc.stderr.strip() == ('error: --plot needs matplotlib, which is not installed: '
                                   'pip install "ptycho-bridge[reconstruct]"')
    assert proc.stdout == "" and not png.exists()


def test_missing_engine_named_with_its_pip_install(fixtures_dir: Path) -> None:
    d = fixtures_dir / "tf_N64_gs1"
    proc = _without(["onnxruntime"], ["parity", str(d / "wts.h5.zip"), "--engines", "onnx", "--random"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ('error: engine onnx needs onnxruntime, which is not installed: '
                                   'pip install "ptycho-bridge[onnx]"')
