"""``export-onnx`` and ``run``: framework-free export, atomic/no-clobber writes, and a run round trip.

The framework-free claim is checked in a fresh interpreter (``sys.modules`` after the commands ran),
and the round trip compares ``run`` outputs with upstream's goldens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")

from ptycho_bridge.cli import main  # noqa: E402
from ptycho_bridge.ops.parity import file_sha256  # noqa: E402
from ptycho_bridge.spec.reassembly import centre_border_masks  # noqa: E402
from tests._support import REPO  # noqa: E402


def _scaled_err(actual: np.ndarray, expected: np.ndarray, region: np.ndarray) -> float:
    d = np.abs(actual.astype(np.complex128) - expected)[..., region]
    return float(d.max() / np.abs(expected)[..., region].max())


def test_export_and_parity_without_tf_or_torch(fixtures_dir: Path, tmp_path: Path) -> None:
    d = fixtures_dir / "tf_N64_gs2"
    out = tmp_path / "model.onnx"
    script = textwrap.dedent(f"""
        import json, sys
        from click.testing import CliRunner
        from ptycho_bridge.cli import main
        r1 = CliRunner().invoke(main, ["export-onnx", {str(d / 'wts.h5.zip')!r}, "-o", {str(out)!r}])
        r2 = CliRunner().invoke(main, ["parity", {str(d / 'wts.h5.zip')!r}, "--engines", "onnx",
                                       "--input", {str(d / 'golden.npz')!r}, "--json"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "torch", "keras"))
        print(json.dumps({{"codes": [r1.exit_code, r2.exit_code], "heavy": heavy, "report": r2.stdout}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["heavy"] == []
    assert res["codes"] == [0, 0]
    report = json.loads(res["report"])
    assert [c["reference"] + "/" + c["actual"] for c in report["comparisons"]] == ["golden/onnx"]

    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["source_sha256"] == file_sha256(d / "wts.h5.zip")
    assert meta["source_era"] == "tf-modelmanager-1"
    spec = json.loads(meta["network_spec"])
    assert (spec["N"], spec["gridsize"]) == (64, 2)


def test_export_refuses_overwrite_without_force(fixtures_dir: Path, tmp_path: Path) -> None:
    arch = str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    r = CliRunner().invoke(main, ["export-onnx", arch, "-o", str(out)])
    assert r.exit_code == 1 and "exists" in r.stderr
    assert out.read_bytes() == b"keep me"
    r = CliRunner().invoke(main, ["export-onnx", arch, "-o", str(out), "--force", "--reassembly", "--opset", "18"])
    assert r.exit_code == 0, r.output
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["object", "trimmed_object"]
    assert model.opset_import[0].version == 18
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("case,engine", [("tf_N64_gs2", "onnx"), ("torch_N64_gs2", "torch")])
def test_run_round_trip_matches_golden(fixtures_dir: Path, tmp_path: Path, case: str, engine: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTYCHO_BRIDGE_NO_PROGRESS", "1")
    d = fixtures_dir / case
    out = tmp_path / "out.npz"
    r = CliRunner().invoke(main, ["run", str(d / "wts.h5.zip"), "--input", str(d / "golden.npz"), "-o", str(out),
                                  "--engine", engine, "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    golden = np.load(d / "golden.npz")
    res = np.load(out)
    assert res["object"].dtype == np.complex64
    B, N = golden["input"].shape[0], 64
    if case.startswith("tf_"):
        # batch-size 2 splits the golden's single 4-sample call: centring differs, so rerun with batch 4
        assert res["trimmed_object"].shape == (B, N, N, 1)
        r = CliRunner().invoke(main, ["run", str(d / "wts.h5.zip"), "--input", str(d / "golden.npz"), "-o", str(out),
                                      "--engine", engine, "--force"])
        assert r.exit_code == 0, r.output
        res = np.load(out)
        got, expected = res["trimmed_object"], golden["output"]
        centre, border = centre_border_masks(N)
        assert _scaled_err(got[..., 0], expected[..., 0], centre) < 2e-5
        assert _scaled_err(got[..., 0], expected[..., 0], border) < 2e-5
        assert res["object"].shape == (B, 4, N, N)
    else:
        assert "trimmed_object" not in res.files  # torch specs carry no padded_size
        got, expected = res["object"], golden["output"]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 2e-5 * np.abs(expected).max()


def test_run_canonical_amplitude_input_and_engines_agree(fixtures_dir: Path, tmp_path: Path) -> None:
    arch = str(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    x = np.random.default_rng(3).random((5, 1, 64, 64), dtype=np.float32)
    np.savez(tmp_path / "in.npz", amplitude=x)
    outs = {}
    for engine in ("onnx", "torch"):
        target = tmp_path / f"{engine}.npz"
        r = CliRunner().invoke(main, ["run", arch, "--input", str(tmp_path / "in.npz"), "-o", str(target),
                                      "--engine", engine, "--batch-size", "2"], env={"PTYCHO_BRIDGE_NO_PROGRESS": "1"})
        assert r.exit_code == 0, r.output
        outs[engine] = np.load(target)
        assert set(outs[engine].files) == {"object"}  # no positions → no reassembly
    a, b = outs["onnx"]["object"], outs["torch"]["object"]
    assert a.shape == (5, 1, 64, 64)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    # wrong channel count is refused with the expected shape in the message
    np.savez(tmp_path / "bad.npz", amplitude=np.zeros((2, 4, 64, 64), np.float32))
    r = CliRunner().invoke(main, ["run", arch, "--input", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "x.npz")])
    assert r.exit_code == 1 and "[B, 1, 64, 64]" in r.stderr
    assert not (tmp_path / "x.npz").exists()
