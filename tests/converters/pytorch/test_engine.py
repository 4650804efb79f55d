"""The PyTorch engine against upstream's own torch goldens, plus strict loading and structure."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converters.pytorch import network as pt  # noqa: E402
from ptycho_bridge.errors import ConversionRefused, SpecError  # noqa: E402
from ptycho_bridge.spec.conventions import golden_canonical_input  # noqa: E402
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors, tf_spec  # noqa: E402

TORCH_CASES = ("torch_N64_gs1", "torch_N64_gs2")
TF_CASES = ("tf_N64_gs1", "tf_N128_gs1", "tf_N64_gs2")


def _read(path: Path):  # type: ignore[no-untyped-def]
    from ptycho_bridge import read_archive

    return read_archive(path)


def _golden(case_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(case_dir / "golden.npz") as npz:
        golden = {k: npz[k] for k in npz.files}
    return golden, json.loads((case_dir / "golden.json").read_text())


def _assert_matches_golden(out: np.ndarray, golden: dict[str, np.ndarray]) -> float:
    ref = golden["output"]
    assert out.dtype == np.complex64 and out.shape == ref.shape
    scale = float(np.abs(ref).max())
    err = float(np.abs(out - ref).max())
    assert err <= 1e-5 * scale, f"max abs err {err:.3g} > 1e-5·max|golden| ({scale:.3g})"
    return err / scale


def _random_tensors(spec: NetworkSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: (0.1 * rng.standard_normal(s)).astype(np.float32) for n, s in expected_tensors(spec).items()}


def _torch_spec(**kw) -> NetworkSpec:  # type: ignore[no-untyped-def]
    base = dict(
        N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True, pad_object=True,
        amp_activation="sigmoid", channels_in=1, channels_out=1, c_outer=1, outer_width=32,
        cbam_encoder=True,
    )
    base.update(kw)
    return NetworkSpec(**base)


# -- upstream goldens ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_archive_reproduces_upstream_forward_predict(fixtures_dir: Path, case: str) -> None:
    case_dir = fixtures_dir / case
    golden, meta = _golden(case_dir)
    entry = _read(case_dir / "wts.h5.zip").primary
    # The fixtures are upstream's default torch CNN: CBAM in every encoder block.
    assert entry.spec.cbam_encoder is meta["config"]["cbam_encoder"] is True
    module = pt.build_module(entry.spec, entry.tensors)
    out = pt.run(module, golden_canonical_input(golden, "pytorch", None))
    _assert_matches_golden(out, golden)
    # chunking changes accumulation order only
    _assert_matches_golden(pt.run(module, golden_canonical_input(golden, "pytorch", None), batch_size=1), golden)


def test_lightning_checkpoint_reproduces_golden(fixtures_dir: Path) -> None:
    case_dir = fixtures_dir / "torch_N64_gs1"
    golden, _ = _golden(case_dir)
    entry = _read(case_dir / "lightning.ckpt").primary
    out = pt.run(pt.build_module(entry.spec, entry.tensors), golden_canonical_input(golden, "pytorch", None))
    _assert_matches_golden(out, golden)


@pytest.mark.parametrize("case", TORCH_CASES)
def test_state_dict_round_trip_matches_upstream_model_pth(fixtures_dir: Path, case: str) -> None:
    """Upstream key names, order and values come back exactly from the canonical tensors."""
    with zipfile.ZipFile(fixtures_dir / case / "wts.h5.zip") as zf:
        raw = torch.load(io.BytesIO(zf.read("diffraction_to_obj/model.pth")), weights_only=True)
    canonical = pt.canonical_from_state_dict(raw)
    entry = _read(fixtures_dir / case / "wts.h5.zip").primary
    sd = pt.state_dict_from_canonical(entry.spec, canonical)
    assert list(sd) == list(raw)
    for key, value in raw.items():
        np.testing.assert_array_equal(sd[key], value.numpy(), err_msg=key)
    # a bare PtychoPINN state_dict (no Lightning wrapper) drops the leading "model."
    bare = pt.state_dict_from_canonical(entry.spec, canonical, prefix="autoencoder.")
    assert list(bare) == [k[len("model.") :] for k in raw]


def test_state_dict_aux_fills_training_tensors() -> None:
    spec = _torch_spec()
    tensors = _random_tensors(spec)
    ones = np.ones((1,), np.float32)
    sd = pt.state_dict_from_canonical(spec, tensors, aux={"training.forward_model.alpha": ones})
    np.testing.assert_array_equal(sd["model.forward_model.alpha"], ones)
    assert sd["model.autoencoder.encoder.blocks.0.attention.SpatialGate.compress.weight"].shape == (1, 2, 7, 7)
    with pytest.raises(SpecError, match="encoder.0.conv1.weight"):
        pt.state_dict_from_canonical(spec, {**tensors, "encoder.0.conv1.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(SpecError, match="forward_model.alpha"):
        pt.state_dict_from_canonical(spec, tensors, aux={"forward_model.alpha": ones})


@pytest.mark.parametrize("case", TF_CASES)
def test_tf_archive_spec_builds_and_loads_strictly(fixtures_dir: Path, case: str) -> None:
    """TF networks (c_outer=4, no CBAM, TF's outer width) are expressible by the torch engine."""
    arch = _read(fixtures_dir / case / "wts.h5.zip")
    spec, tensors = arch.primary.spec, arch.primary.tensors
    assert spec.c_outer == 4 and not spec.cbam_encoder and not spec.cbam_bottleneck
    assert spec.outer_width == spec.n_filters_scale * 2048 // spec.N
    module = pt.build_module(spec, tensors)
    golden, _ = _golden(fixtures_dir / case)
    out = pt.run(module, golden_canonical_input(golden, "tensorflow", arch.intensity_scale))
    assert out.shape == (golden["input"].shape[0], spec.channels_out, spec.N, spec.N)
    assert np.isfinite(out).all() and np.abs(out).max() > 0


# -- structure ----------------------------------------------------------------------------------
STRUCTURE_SPECS = {
    "torch-default": _torch_spec(),
    "torch-gs2-bottleneck": _torch_spec(gridsize=2, channels_in=4, channels_out=4, c_outer=4, cbam_bottleneck=True),
    "tf-N128": tf_spec(N=128, gridsize=1, n_filters_scale=2, object_big=True, probe_big=True, pad_object=True,
                       amp_activation="swish"),
    "tf-no-pad-object": tf_spec(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=False,
                                pad_object=False, amp_activation="softplus"),
    "tf-small-probe": tf_spec(N=256, gridsize=1, n_filters_scale=1, object_big=False, probe_big=False,
                              pad_object=True, amp_activation="relu"),
}


@pytest.mark.parametrize("name", sorted(STRUCTURE_SPECS))
def test_module_tensors_are_the_canonical_index(name: str) -> None:
    spec = STRUCTURE_SPECS[name]
    module = pt.build_module(spec)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected_tensors(spec)
    module = pt.build_module(spec, _random_tensors(spec))
    x = np.random.default_rng(1).random((2, spec.channels_in, spec.N, spec.N), dtype=np.float32)
    out = pt.run(module, x)
    assert out.shape == (2, spec.channels_out, spec.N, spec.N) and out.dtype == np.complex64
    assert np.isfinite(out).all()


def test_border_is_exactly_zero_without_probe_big() -> None:
    """pad_object with probe_big=False: only the zero-padded narrow branch, nothing in the border."""
    spec = STRUCTURE_SPECS["tf-small-probe"]
    module = pt.build_module(spec, _random_tensors(spec))
    out = pt.run(module, np.random.default_rng(2).random((1, 1, 256, 256), dtype=np.float32))
    q = spec.N // 4
    border = np.ones((spec.N, spec.N), bool)
    border[q:-q, q:-q] = False
    assert np.all(out[..., border] == 0)
    assert np.abs(out[..., ~border]).max() > 0


def test_swish_and_silu_are_the_same_activation() -> None:
    spec = _torch_spec(amp_activation="swish")
    tensors = _random_tensors(spec)
    x = np.random.default_rng(3).random((1, 1, 64, 64), dtype=np.float32)
    a = pt.run(pt.build_module(spec, tensors), x)
    b = pt.run(pt.build_module(replace(spec, amp_activation="silu"), tensors), x)
    np.testing.assert_array_equal(a, b)


# -- strictness and refusals --------------------------------------------------------------------
def test_missing_tensor_is_named() -> None:
    spec = _torch_spec()
    tensors = _random_tensors(spec)
    del tensors["phase.outer.conv2.bias"]
    with pytest.raises(SpecError, match=r"missing tensor 'phase\.outer\.conv2\.bias'"):
        pt.build_module(spec, tensors)


def test_wrong_shape_is_named() -> None:
    spec = _torch_spec()
    tensors = _random_tensors(spec)
    tensors["encoder.1.cbam.mlp1.weight"] = np.zeros((3, 64), np.float32)
    with pytest.raises(SpecError, match=r"encoder\.1\.cbam\.mlp1\.weight.*\[3, 64\]"):
        pt.build_module(spec, tensors)


def test_extra_tensor_is_named_but_training_tensors_are_ignored() -> None:
    spec = _torch_spec(cbam_encoder=False)
    tensors = _random_tensors(spec)
    tensors["training.forward_model.alpha"] = np.ones((1,), np.float32)
    pt.build_module(spec, tensors)
    tensors["encoder.0.cbam.spatial.weight"] = np.zeros((1, 2, 7, 7), np.float32)
    with pytest.raises(SpecError, match=r"unexpected tensor 'encoder\.0\.cbam\.spatial\.weight'"):
        pt.build_module(spec, tensors)


@pytest.mark.parametrize(
    "change, field",
    [({"batch_norm": True}, "batch_norm"), ({"amp_activation": "tanh"}, "amp_activation")],
)
def test_unsupported_networks_are_refused(change: dict, field: str) -> None:
    with pytest.raises(ConversionRefused) as info:
        pt.build_module(replace(_torch_spec(), **change))
    assert info.value.field == field


def test_run_rejects_wrong_input_shape() -> None:
    module = pt.build_module(_torch_spec())
    with pytest.raises(ValueError, match=r"\[B, 1, 64, 64\]"):
        pt.run(module, np.zeros((1, 4, 64, 64), np.float32))
