"""Every engine reproduces the SavedModel era's own outputs (``golden.npz``, ``golden_patches.npz``).

Why: the golden was computed by upstream @67ea583 with TensorFlow 2.15; its reassembly did not
centre the offsets on their batch mean, so the archive carries ``reassembly_centring=False`` and
parity must follow it (with centring, the comparison fails: that is checked too).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.ops.engines import availability, load_engine
from ptycho_bridge.ops.parity import archive_under_test, load_input, parity_report, trimmed_object
from ptycho_bridge.spec.reassembly import compare_regions
from tests._support import SAVEDMODEL_DIR

CASE = SAVEDMODEL_DIR / "tf215_N64_gs1"
pytestmark = pytest.mark.skipif(not (CASE / "wts.h5.zip").exists(),
                                reason=f"SavedModel-era fixture absent ({SAVEDMODEL_DIR})")
TOL = 1e-5


@pytest.fixture(scope="module")
def aut():  # type: ignore[no-untyped-def]
    return archive_under_test(CASE / "wts.h5.zip")


@pytest.mark.parametrize("engine", ["onnx", "torch", "keras"])
def test_engine_reproduces_golden(engine: str, aut) -> None:  # type: ignore[no-untyped-def]
    reason = availability(engine)
    if reason is not None:
        pytest.skip(reason)
    inp = load_input(CASE / "golden.npz", aut.archive, aut.spec)
    report = parity_report([aut], [engine], inp)
    assert report["ok"], report["comparisons"]
    (comp,) = [c for c in report["comparisons"] if c["reference"] == "golden"]
    for region in comp["regions"].values():
        assert region["max_abs_err"] <= TOL * region["max_ref"]
    # per patch, before any reassembly: golden_patches.npz
    obj = load_engine(engine, aut.spec, aut.tensors).run(inp.x_norm)
    patches = np.load(CASE / "golden_patches.npz")["obj"]
    err = compare_regions(obj, patches.transpose(0, 3, 1, 2), layout="nchw")
    assert all(err[r]["scaled_err"] <= TOL for r in ("centre", "border"))


def test_centred_reassembly_would_not_match(aut) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    inp = load_input(CASE / "golden.npz", aut.archive, aut.spec)
    obj = load_engine("onnx", aut.spec, aut.tensors).run(inp.x_norm)
    golden = np.load(CASE / "golden.npz")["output"]
    plain = compare_regions(trimmed_object(obj, inp.positions_tf, aut.spec, centre=False), golden, layout="nhwc")
    centred = compare_regions(trimmed_object(obj, inp.positions_tf, aut.spec, centre=True), golden, layout="nhwc")
    assert plain["all"]["scaled_err"] <= TOL < centred["all"]["scaled_err"]


def test_export_onnx_reassembly_follows_the_era(aut, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``export-onnx --reassembly`` builds this era's stage (no centring) and reproduces golden.npz."""
    pytest.importorskip("onnxruntime")
    import onnx
    from click.testing import CliRunner

    from converters.onnx.engine import make_session, run_session
    from ptycho_bridge.cli import main

    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export-onnx", str(CASE / "wts.h5.zip"), "-o", str(out), "--reassembly"])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props}["reassembly_centring"] == "false"
    inp = load_input(CASE / "golden.npz", aut.archive, aut.spec)
    trimmed = run_session(make_session(model), inp.x_norm, positions=inp.positions_tf)
    err = compare_regions(trimmed, np.load(CASE / "golden.npz")["output"], layout="nhwc")
    assert all(err[r]["scaled_err"] <= TOL for r in ("centre", "border"))
