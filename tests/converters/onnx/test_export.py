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
from ptycho_bridge.errors import ConversionRefused, OutputExistsError  # noqa: E402
from ptycho_bridge.formats.detect import read_archive  # noqa: E402
from ptycho_bridge.spec import reassembly  # noqa: E402
from ptycho_bridge.spec.conventions import golden_canonical_input  # noqa: E402
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors, tf_spec  # noqa: E402
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


# -- variants without goldens: float64 numpy transcription of the documented formulas -------------
def _random_tensors(spec: NetworkSpec, seed: int, extra: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = dict(expected_tensors(spec))
    shapes.update(extra or {})
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = np.array(7, np.int64)
        elif leaf == "running_var":
            out[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif leaf == "running_mean" or leaf == "bias":
            out[name] = rng.normal(0, 0.05, shape).astype(np.float32)
        elif ".bn" in name:  # batch-norm gamma
            out[name] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            head = shape[0] <= spec.channels_out and len(shape) == 4
            std = 0.25 / np.sqrt(fan_in) if head else np.sqrt(2.0 / fan_in)
            out[name] = rng.normal(0, std, shape).astype(np.float32)
    return out


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    k = w.shape[-1]
    pad = k // 2
    H, W = x.shape[-2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((x.shape[0], w.shape[0], H, W))
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("oi,bihw->bohw", w[:, :, dy, dx], xp[:, :, dy : dy + H, dx : dx + W], optimize=True)
    return out if b is None else out + b[None, :, None, None]


def _reference(spec: NetworkSpec, t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    T = {k: np.asarray(v, np.float64) for k, v in t.items()}
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    acts = {"sigmoid": sig, "swish": lambda v: v * sig(v), "softplus": lambda v: np.log1p(np.exp(v)), "relu": relu}

    def conv_bn(v, block, j):
        v = _conv(v, T[f"{block}.conv{j}.weight"], T[f"{block}.conv{j}.bias"])
        bn = f"{block}.bn{j}"
        if spec.batch_norm and f"{bn}.running_mean" in T:
            shape = (1, -1, 1, 1)
            v = (v - T[f"{bn}.running_mean"].reshape(shape)) / np.sqrt(T[f"{bn}.running_var"].reshape(shape) + 1e-5)
            v = v * T[f"{bn}.weight"].reshape(shape) + T[f"{bn}.bias"].reshape(shape)
        return v

    def double(v, block):
        return relu(conv_bn(relu(conv_bn(v, block, 1)), block, 2))

    def up(v):
        return v.repeat(2, axis=2).repeat(2, axis=3)

    def cbam(v, p):
        mlp = lambda z: relu(z @ T[f"{p}.cbam.mlp1.weight"].T + T[f"{p}.cbam.mlp1.bias"]) @ T[  # noqa: E731
            f"{p}.cbam.mlp2.weight"
        ].T + T[f"{p}.cbam.mlp2.bias"]
        gate = sig(mlp(v.mean(axis=(2, 3))) + mlp(v.max(axis=(2, 3))))
        v = v * gate[:, :, None, None]
        comp = np.concatenate([v.max(axis=1, keepdims=True), v.mean(axis=1, keepdims=True)], axis=1)
        return v * sig(_conv(comp, T[f"{p}.cbam.spatial.weight"], None))

    h = x.astype(np.float64)
    for i, _ in enumerate(spec.encoder_widths):
        h = double(h, f"encoder.{i}")
        if spec.cbam_encoder:
            h = cbam(h, f"encoder.{i}")
        B, C, H, W = h.shape
        h = h.reshape(B, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))
    if spec.cbam_bottleneck:
        h = cbam(h, "bottleneck")
    N, q, L = spec.N, spec.N // 4, spec.latent_width
    border = 1.0 - reassembly.centre_mask(N).astype(np.float64)
    heads = {}
    for head in ("amp", "phase"):
        act = acts[spec.amp_activation] if head == "amp" else (lambda v: np.pi * np.tanh(v))
        v = h
        for d, _ in enumerate(spec.decoder_widths):
            v = up(double(v, f"{head}.decoder.{d}"))
        if not spec.pad_object:
            heads[head] = act(conv_bn(up(double(v, f"{head}.outer")), head, 2))
            continue
        x1 = np.pad(act(conv_bn(v[:, : L - spec.c_outer], head, 1)), ((0, 0), (0, 0), (q, q), (q, q)))
        if spec.probe_big:
            x2 = conv_bn(up(double(v[:, L - spec.c_outer :], f"{head}.outer")), head, 2)
            x1 = x1 + x2 * sig(x2) * border
        heads[head] = x1
    return heads["amp"] * np.exp(1j * heads["phase"])


def _assert_matches_reference(spec: NetworkSpec, tensors, B: int = 1, seed: int = 0, **build_kw):
    model = build_onnx(spec, tensors, **build_kw)
    _check_graph(model)
    x = np.random.default_rng(seed).uniform(0, 1.5, (B, spec.channels_in, spec.N, spec.N)).astype(np.float32)
    ref = _reference(spec, tensors, x)
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
    model, outs, _ = _assert_matches_reference(spec, _random_tensors(spec, 1))
    assert "Softplus" in ops_used(model)
    obj = outs[OUTPUT_NAME]
    q = spec.N // 4
    assert np.all(obj[:, :, :q] == 0) and np.all(obj[:, :, :, -q:] == 0)  # border exactly 0 without the outer branch


def test_variant_tf_pad_object_false_relu() -> None:
    spec = tf_spec(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=False,
                   amp_activation="relu")
    assert not spec.narrow_head
    model, _, _ = _assert_matches_reference(spec, _random_tensors(spec, 2))
    assert "Pad" not in ops_used(model) and "Slice" not in ops_used(model)


def test_variant_object_big_false_reassembly_is_identity() -> None:
    spec = tf_spec(N=64, gridsize=2, n_filters_scale=1, object_big=False, probe_big=True, pad_object=True,
                   amp_activation="swish", padded_size=78)
    _, outs, _ = _assert_matches_reference(spec, _random_tensors(spec, 3), B=2, reassembly=True)
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
    tensors = _random_tensors(spec, 4, extra)
    model, _, x = _assert_matches_reference(spec, tensors, B=2)
    n_bn = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert n_bn == 2 * len(spec.encoder_widths) + 3
    # the axes-as-input forms of ReduceMax/ReduceMean (opset >= 18) give the same result
    for opset in (18, 21):
        np.testing.assert_allclose(run_onnx(build_onnx(spec, tensors, opset=opset), x), run_onnx(model, x),
                                   rtol=0, atol=1e-6)


def test_refusals() -> None:
    spec = _torch_like_spec(cbam_bottleneck=False)
    tensors = _random_tensors(spec, 5)
    with pytest.raises(ConversionRefused, match="use_polar=False") as info:
        build_onnx(dataclasses.replace(spec, use_polar=False), tensors)
    assert isinstance(info.value, OnnxExportError) and info.value.field == "use_polar"
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
        build_onnx(spec, _random_tensors(spec, 6, {"encoder.0.bn1.weight": (32,)}))
    bn_spec = dataclasses.replace(spec, batch_norm=True)
    bn = _random_tensors(bn_spec, 6, {"extra.autoencoder.decoder_amp.amp.conv_up_block.bn1.weight": (32,)})
    with pytest.raises(OnnxExportError, match="conv_up_block.bn1"):
        build_onnx(bn_spec, bn)
