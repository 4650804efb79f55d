"""``ptycho-bridge reconstruct`` end to end: outputs, report, --compare, and one-line refusals that leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.schema import schema_errors
from tests.ops.reconstruct._cases import DATASET, archive, golden, need_fixtures

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(main, ["reconstruct", *args], env={"PTYCHO_BRIDGE_NO_PROGRESS": "1"})


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    made = runner.invoke(main, ["sample", "-o", str(out)])
    assert made.exit_code == 0, made.output
    return out


def test_fixture_scan_with_compare_against_upstream(tmp_path: Path) -> None:
    need_fixtures()
    out, plot = tmp_path / "rec", tmp_path / "diff.png"
    stitched = Path(DATASET).parent / "tf_N64_gs2_n15" / "stitched.npz"
    res = invoke(archive("tf_N64_gs2_n15"), str(DATASET), "-o", str(out), "--subsample", "100", "--n-groups", "15",
                 "--compare", str(stitched), "--plot", str(plot), "--format", "png,npz,tiff", "--json")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["amplitude.png", "amplitude.tiff", "comparison.png", "object.npz",
                                                     "phase.png", "phase.tiff", "reconstruct.json"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "reconstruct.json").read_text())
    assert schema_errors("reconstruct-report", report) == []
    assert report["comparison"]["ok"] and report["groups"] == {"count": 15, "per_group": 4, "patterns_used": report["groups"]["patterns_used"]}
    assert report["choices"]["centring_batch"] == 32 and len(report["archive"]["sha256"]) == 64
    # quality against --compare's object (upstream's own stitch of the same scan): equal to parity's tolerance
    assert report["quality"]["reference"] == {"source": "compare", "path": str(stitched)}
    assert report["quality"]["amplitude"]["ssim"] > 0.9999 and report["quality"]["frc"]["crossing_ring"] is None
    assert "quality vs compare: amplitude SSIM 1.000" in res.stderr
    with np.load(out / "object.npz", allow_pickle=False) as z:
        assert set(z.files) == {"object", "amplitude", "phase", "groups", "global_offsets", "local_offsets",
                                "norm_scale", "intensity_scale"}
        assert z["object"].dtype == np.complex64 and z["amplitude"].dtype == np.float32
        assert z["groups"].shape == (15, 4) and z["local_offsets"].shape == (15, 4, 2)
        assert np.array_equal(z["groups"], golden("tf_N64_gs2_n15", "grouped")["nn_indices"])
    assert "reconstructed 60 patterns in 15 groups" in res.stderr
    assert json.loads(res.stdout)["files"] == report["files"]


def test_compare_beyond_tolerance_exits_1(tmp_path: Path) -> None:
    need_fixtures()
    other = golden("tf_N64_gs1", "stitched")["object"][..., 0] * np.complex64(1.001)
    np.savez(tmp_path / "other.npz", object=other)
    res = invoke(archive("tf_N64_gs1"), str(DATASET), "-o", str(tmp_path / "rec"), "--compare", str(tmp_path / "other.npz"))
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1].startswith("error: object differs")
    assert (tmp_path / "rec" / "reconstruct.json").is_file()  # the outputs are kept; the verdict is in the report


def test_sample_scan_reconstructs_and_outdir_rules(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "rec"
    args = (str(sample / "wts.h5.zip"), str(sample / "dataset.npz"), "-o", str(out))
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "reconstruct.json").read_text())
    assert report["groups"]["count"] == 144 and "comparison.png" in report["files"]  # the held-out scan (12 x 12)
    again = invoke(*args)
    assert again.exit_code == 1 and again.stderr.strip().startswith("error:") and "--force" in again.stderr
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert [p.name for p in tmp_path.iterdir()] == ["rec"]  # no temporary folders left


def _bad(scan: Path, tmp: Path, name: str) -> Path:
    with np.load(scan) as z:
        d = {k: z[k] for k in z.files}
    if name == "missing key":
        d.pop("ycoords")
    elif name == "wrong N":
        d["diffraction"] = d["diffraction"][:, :32, :32]
    elif name == "NaN":
        d["diffraction"][3, 10, 10] = np.nan
    elif name == "mismatched lengths":
        d["xcoords"] = d["xcoords"][:-2]
    elif name == "zero patterns":
        d["diffraction"] = d["diffraction"][:0]
    elif name == "canvas over the bound":
        d["xcoords"] = d["xcoords"] * 1000.0
    elif name == "pickled objects":
        d["probeGuess"] = np.array([{"a": 1}], dtype=object)
    path = tmp / "bad.npz"
    np.savez(path, **d)
    return path


@pytest.mark.parametrize("name", ["missing key", "wrong N", "NaN", "mismatched lengths", "zero patterns",
                                  "canvas over the bound", "pickled objects"])
def test_bad_dataset_one_error_line_no_output(sample: Path, tmp_path: Path, name: str) -> None:
    bad = _bad(sample / "dataset.npz", tmp_path, name)
    extra = ["--max-canvas", "4096"] if name == "canvas over the bound" else []
    res = invoke(str(sample / "wts.h5.zip"), str(bad), "-o", str(tmp_path / "rec"), *extra)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.npz ["), lines
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, sample: Path, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tifffile" else real(name, *a))
    res = invoke(str(sample / "wts.h5.zip"), str(sample / "dataset.npz"), "-o", str(tmp_path / "rec"))
    assert res.exit_code == 1
    assert res.stderr.strip() == ('error: reconstruct needs tifffile (not installed); install them with: '
                                  'pip install "ptycho-bridge[reconstruct]"')
    assert not (tmp_path / "rec").exists()


def test_extra_packages_follow_pyproject() -> None:
    """``EXTRAS["reconstruct"]`` is pyproject's extra (as import names); the command needs it less matplotlib."""
    import re

    from ptycho_bridge.cli.reconstruct import EXTRA_PACKAGES
    from ptycho_bridge.ops.extras import EXTRAS
    from tests._support import REPO

    line = re.search(r"^reconstruct = \[(.*)\]", (REPO / "pyproject.toml").read_text(), re.M)
    assert line is not None
    dists = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] for d in re.findall(r'"([^"]+)"', line.group(1))]
    assert EXTRAS["reconstruct"] == tuple({"scikit-image": "skimage"}.get(d, d) for d in dists)
    assert EXTRA_PACKAGES == ("scipy", "tifffile", "skimage")  # matplotlib: only --plot, checked by require_plotting


def test_key_mapping_and_usage_errors(sample: Path, tmp_path: Path) -> None:
    with np.load(sample / "dataset.npz") as z:
        d = {k: z[k] for k in z.files}
    d["patterns"] = d.pop("diffraction")
    np.savez(tmp_path / "renamed.npz", **d)
    res = invoke(str(sample / "wts.h5.zip"), str(tmp_path / "renamed.npz"), "-o", str(tmp_path / "rec"),
                 "--key", "diffraction=patterns", "--n-groups", "8")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rec" / "reconstruct.json").read_text())["dataset"]["keys"]["diffraction"] == "patterns"
    assert invoke(str(sample / "wts.h5.zip"), str(tmp_path / "renamed.npz"), "-o", str(tmp_path / "r2"),
                  "--key", "bogus=x").exit_code == 2
    assert invoke(str(sample / "wts.h5.zip"), str(tmp_path / "renamed.npz"), "-o", str(tmp_path / "r2"),
                  "--format", "jpeg").exit_code == 2
