"""ONNX export (converters/onnx/export.py, with the network and reassembly it emits), run with ONNX Runtime.

Against the upstream goldens: torch fixtures per patch; TF fixtures through the in-graph reassembly
stage, centre and border regions separately (the TF border is ×1000, so each region is scaled by its
own max|golden|). Variants the fixtures do not cover (other heads, activations, CBAM bottleneck,
batch norm, object_big=False) are checked against a float64 numpy transcription of the formulas in
../shared/docs/upstream-architecture.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from converters.onnx.engine import make_session, run_onnx, run_session  # noqa: E402
from converters.onnx.export import build_onnx, ops_used, save_onnx  # noqa: E402
from converters.onnx.graph import OnnxExportError  # noqa: E402
from converters.onnx.layout import INPUT_NAME, OUTPUT_NAME, POSITIONS_NAME, TRIMMED_NAME  # noqa: E402
from ptycho_bridge.errors import OutputExistsError  # noqa: E402
from ptycho_bridge.formats.detect import read_archive  # noqa: E402
from ptycho_bridge.spec import reassembly  # noqa: E402
from tests.numpy_reference import random_tensors, reference  # noqa: E402
from ptycho_bridge.spec.conventions import golden_canonical_input  # noqa: E402
from ptycho_bridge.spec.network import NetworkSpec, tf_spec  # noqa: E402
from tests._support import REPO  # noqa: E402

TF_CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1")
TORCH_CASES = ("torch_N64_gs1", "torch_N64_gs2")
TOL = 1e-5  # × max|golden| (per region for the TF reassembled output)


def _load(fixtures_dir: Path, case: str):
    arch = read_archive(fixtures_dir / case / "wts.h5.zip")
    golden = dict(np.load(fixtures_dir / case / "golden.npz"))
    x = golden_canonical_input(golden, arch.backend, arch.intensity_scale)
    return arch, golden, x


def _inferred_output_dims(model) -> dict[str, list]:
    """Output shapes as ONNX shape inference derives them (declared output shapes removed first)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True)
    return {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in inferred.graph.output
    }


def _declared_dims(model) -> dict[str, list]:
    return {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}


def _check_graph(model) -> None:
    onnx.checker.check_model(model, full_check=True)
    inferred, declared = _inferred_output_dims(model), _declared_dims(model)
    assert set(inferred) == set(declared)
    for name, dims in declared.items():
        assert dims[0] == "B"
        assert inferred[name][1:] == dims[1:], (name, inferred[name], dims)
        assert not isinstance(inferred[name][0], int) or inferred[name][0] == 0  # batch stays symbolic


# -- upstream goldens ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_fixture_per_patch(fixtures_dir: Path, case: str) -> None:
    arch, golden, x = _load(fixtures_dir, case)
    spec = arch.primary.spec
    assert spec.cbam_encoder  # the torch goldens exercise CBAM
    model = build_onnx(spec, arch.primary.tensors, metadata={"era": arch.era})
    _check_graph(model)
    assert {"Gemm", "GlobalAveragePool", "GlobalMaxPool", "ReduceMax"} <= set(ops_used(model))
    out = run_onnx(model, x, threads=2)
    ref = golden["output"]
    assert out.dtype == np.complex64 and out.shape == ref.shape
    err = float(np.abs(out.astype(np.complex128) - ref).max())
    assert err <= TOL * float(np.abs(ref).max()), err


@pytest.mark.parametrize("case", TF_CASES)
def test_tf_fixture_reassembled(fixtures_dir: Path, case: str) -> None:
    arch, golden, x = _load(fixtures_dir, case)
    spec = arch.primary.spec
    model = build_onnx(spec, arch.primary.tensors, reassembly=True)
    _check_graph(model)
    session = make_session(model, threads=2)
    out = run_session(session, x, positions=golden["positions"])
    ref = golden["output"]
    assert out.dtype == np.complex64 and out.shape == ref.shape
    regions = reassembly.compare_regions(out, ref)
    for region in ("centre", "border"):
        assert regions[region]["max_ref"] > 0
        assert regions[region]["scaled_err"] <= TOL, (region, regions[region])

    # the in-graph stage equals the numpy reference applied to the graph's own per-patch output
    obj_ri, trimmed_ri = session.run(None, {INPUT_NAME: x, POSITIONS_NAME: golden["positions"]})
    obj = (obj_ri[..., 0] + 1j * obj_ri[..., 1]).astype(np.complex64)
    numpy_stage = reassembly.reassemble(obj, golden["positions"], N=spec.N, padded_size=spec.padded_size)
    stage_err = reassembly.compare_regions(trimmed_ri[..., 0] + 1j * trimmed_ri[..., 1], numpy_stage)
    for region in ("centre", "border"):
        assert stage_err[region]["scaled_err"] <= 1e-6, (region, stage_err[region])


def test_metadata_and_save_roundtrip(fixtures_dir: Path, tmp_path: Path) -> None:
    arch, golden, x = _load(fixtures_dir, "tf_N64_gs1")
    spec = arch.primary.spec
    model = build_onnx(spec, arch.primary.tensors, opset=18, metadata={"source_sha256": "ab" * 32, "era": arch.era})
    props = {p.key: p.value for p in model.metadata_props}
    assert props["opset"] == "18" and model.opset_import[0].version == 18
    assert NetworkSpec.from_dict(json.loads(props["network_spec"])) == spec
    assert props["source_sha256"] == "ab" * 32 and props["era"] == "tf-modelmanager-1"
    assert props["reassembly"] == "false"

    target = tmp_path / "model.onnx"
    assert save_onnx(model, target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left behind
    assert onnx.load(str(target)) == model
    from_model = run_onnx(model, x)
    np.testing.assert_array_equal(run_onnx(target, x), from_model)
    np.testing.assert_array_equal(run_onnx(target.read_bytes(), x), from_model)
    # replacing an existing file is atomic too; without overwrite it is refused and left intact
    save_onnx(model.SerializeToString(), target)
    assert onnx.load(str(target)) == model
    with pytest.raises(OutputExistsError):
        save_onnx(b"not a model", target, overwrite=False)
    assert onnx.load(str(target)) == model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    fresh = tmp_path / "fresh.onnx"
    save_onnx(model, fresh, overwrite=False)
    assert onnx.load(str(fresh)) == model


def test_no_framework_imported(fixtures_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from ptycho_bridge.formats.detect import read_archive
        from converters.onnx.engine import run_onnx
        from converters.onnx.export import build_onnx
        for case, reassemble in (("tf_N64_gs2", True), ("torch_N64_gs1", False)):
            arch = read_archive({str(fixtures_dir)!r} + "/" + case + "/wts.h5.zip")
            spec = arch.primary.spec
            model = build_onnx(spec, arch.primary.tensors, reassembly=reassemble)
            x = np.ones((2, spec.channels_in, spec.N, spec.N), np.float32)
            pos = np.zeros((2, 1, 2, spec.channels_in), np.float32) if reassemble else None
            run_onnx(model, x, positions=pos)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "keras"))
        assert not bad, bad
        print("clean")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "clean" in proc.stdout


# -- variants without goldens: the float64 numpy reference (tests/numpy_reference.py) -----------------


def _assert_matches_reference(spec: NetworkSpec, tensors, B: int = 1, seed: int = 0, **build_kw):
    model = build_onnx(spec, tensors, **build_kw)
    _check_graph(model)
    x = np.random.default_rng(seed).uniform(0, 1.5, (B, spec.channels_in, spec.N, spec.N)).astype(np.float32)
    ref = reference(spec, tensors, x)
    positions = np.zeros((B, 1, 2, spec.channels_in), np.float32)
    session = make_session(model, threads=2)
    feeds = {INPUT_NAME: x, POSITIONS_NAME: positions} if build_kw.get("reassembly") else {INPUT_NAME: x}
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = outs[OUTPUT_NAME][..., 0] + 1j * outs[OUTPUT_NAME][..., 1]
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err <= TOL * float(np.abs(ref).max()), err
    return model, outs, x


def test_variant_tf_no_outer_branch_softplus() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=False, pad_object=True,
                   amp_activation="softplus")
    assert not spec.outer_tensors
    model, outs, _ = _assert_matches_reference(spec, random_tensors(spec, 1))
    assert "Softplus" in ops_used(model)
    obj = outs[OUTPUT_NAME]
    q = spec.N // 4
    assert np.all(obj[:, :, :q] == 0) and np.all(obj[:, :, :, -q:] == 0)  # border exactly 0 without the outer branch


def test_variant_tf_pad_object_false_relu() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=False,
                   amp_activation="relu")
    assert not spec.narrow_head
    model, _, _ = _assert_matches_reference(spec, random_tensors(spec, 2))
    assert "Pad" not in ops_used(model) and "Slice" not in ops_used(model)


def test_variant_object_big_false_reassembly_is_identity() -> None:
    spec = tf_spec(N=64, gridsize=2, n_filters_scale=1, object_big=False, probe_big=True, pad_object=True,
                   amp_activation="swish", padded_size=78)
    _, outs, _ = _assert_matches_reference(spec, random_tensors(spec, 3), B=2, reassembly=True)
    np.testing.assert_array_equal(outs[TRIMMED_NAME], np.transpose(outs[OUTPUT_NAME], (0, 2, 3, 1, 4)))


def _torch_like_spec(**kw) -> NetworkSpec:
    base = dict(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
                amp_activation="swish", channels_in=4, channels_out=4, c_outer=4, outer_width=32,
                cbam_encoder=True, cbam_bottleneck=True)
    base.update(kw)
    return NetworkSpec(**base)


def test_variant_cbam_bottleneck_batch_norm() -> None:
    spec = _torch_like_spec(batch_norm=True)
    extra = {f"phase.bn{j}.{p}": ((4,) if p != "num_batches_tracked" else ())
             for j in (1, 2) for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    extra.update({f"phase.decoder.0.bn1.{p}": (64,) for p in ("weight", "bias", "running_mean", "running_var")})
    tensors = random_tensors(spec, 4, extra)
    model, _, x = _assert_matches_reference(spec, tensors, B=2)
    n_bn = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert n_bn == 2 * len(spec.encoder_widths) + 3
    # the axes-as-input forms of ReduceMax/ReduceMean (opset >= 18) give the same result
    for opset in (18, 21):
        np.testing.assert_allclose(run_onnx(build_onnx(spec, tensors, opset=opset), x), run_onnx(model, x),
                                   rtol=0, atol=1e-6)


def test_refusals() -> None:
    spec = _torch_like_spec(cbam_bottleneck=False)
    tensors = random_tensors(spec, 5)
    with pytest.raises(OnnxExportError, match="amp_activation"):
        build_onnx(dataclasses.replace(spec, amp_activation="gelu"), tensors)
    with pytest.raises(OnnxExportError, match="opset"):
        build_onnx(spec, tensors, opset=16)
    missing = dict(tensors)
    del missing["amp.conv2.weight"]
    with pytest.raises(OnnxExportError, match="amp.conv2.weight"):
        build_onnx(spec, missing)
    wrong = dict(tensors, **{"encoder.0.conv1.weight": np.zeros((32, 1, 3, 3), np.float32)})
    with pytest.raises(OnnxExportError, match="encoder.0.conv1.weight"):
        build_onnx(spec, wrong)
    with pytest.raises(OnnxExportError, match="padded_size"):
        build_onnx(spec, tensors, reassembly=True)  # torch specs carry no TF canvas size
    with pytest.raises(OnnxExportError, match="encoder.0.bn1"):  # BN tensors under batch_norm=False
        build_onnx(spec, random_tensors(spec, 6, {"encoder.0.bn1.weight": (32,)}))
    bn_spec = dataclasses.replace(spec, batch_norm=True)
    bn = random_tensors(bn_spec, 6, {"extra.autoencoder.decoder_amp.amp.conv_up_block.bn1.weight": (32,)})
    with pytest.raises(OnnxExportError, match="conv_up_block.bn1"):
        build_onnx(bn_spec, bn)
