"""``run`` and ``export-onnx``: summaries (keys, shapes, signature), ``--plot``, and one line on a core install."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from tests.cli.test_parity_cli import PNG, _without

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTYCHO_BRIDGE_NO_PROGRESS", "1")


def test_run_prints_keys_shapes_engine_time_and_plots(fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    d = fixtures_dir / "tf_N64_gs2"
    out, png = tmp_path / "out.npz", tmp_path / "run.png"
    r = CliRunner().invoke(main, ["run", str(d / "wts.h5.zip"), "--input", str(d / "golden.npz"), "-o", str(out),
                                  "--plot", str(png)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"wrote {out}: 4 pattern(s) through onnx in ") and lines[0].endswith(" s")
    assert lines[1].split() == ["object", "complex64", "[4,", "4,", "64,", "64]"]
    assert lines[2].split() == ["trimmed_object", "complex64", "[4,", "64,", "64,", "1]"]
    assert sorted(np.load(out).files) == ["object", "trimmed_object"]
    assert png.read_bytes()[:8] == PNG


def test_run_help_names_its_output_keys() -> None:
    r = CliRunner().invoke(main, ["run", "--help"])
    assert "object          complex64 [B, Cout, N, N]" in r.output and "trimmed_object" in r.output


def test_export_onnx_prints_the_signature(fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export-onnx", str(fixtures_dir / "tf_N64_gs2" / "wts.h5.zip"), "-o", str(out),
                                  "--reassembly"])
    assert r.exit_code == 0, r.output
    assert [line.split() for line in r.stdout.splitlines()] == [
        [str(out)],
        ["input", "amplitude", "float32", "[B,", "4,", "64,", "64]"],
        ["input", "positions", "float32", "[B,", "1,", "2,", "4]"],
        ["output", "object", "float32", "[B,", "4,", "64,", "64,", "2]"],
        ["output", "trimmed_object", "float32", "[B,", "64,", "64,", "1,", "2]"],
    ]


def test_export_onnx_on_a_core_install_names_the_extra(fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = _without(["onnx", "onnxruntime"], ["export-onnx", str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"),
                                              "-o", str(out)])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == 'error: export-onnx needs onnx, which is not installed: pip install "ptycho-bridge[onnx]"'
    assert not out.exists()


@pytest.mark.parametrize("engine,hidden,extra", [("onnx", ["onnxruntime"], "onnx"), ("torch", ["torch"], "torch"),
                                                 ("keras", ["tensorflow"], "tf")])
def test_run_engine_missing_names_the_extra(fixtures_dir: Path, tmp_path: Path, engine: str, hidden: list[str],
                                            extra: str) -> None:
    d = fixtures_dir / "tf_N64_gs1"
    proc = _without(hidden, ["run", str(d / "wts.h5.zip"), "--input", str(d / "golden.npz"), "-o",
                             str(tmp_path / "o.npz"), "--engine", engine])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: --engine {engine} needs {hidden[0]}, which is not installed: "
                                   f'pip install "ptycho-bridge[{extra}]"')
