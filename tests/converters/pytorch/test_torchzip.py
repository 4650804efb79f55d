"""Tests for converters/pytorch/torchzip.py: reading real torch.save files, hand-made and hostile ones, fuzzing; and writing them (torch_zip_bytes)."""

from __future__ import annotations

import collections
import io
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.pytorch.torchzip import (
    is_torch_zip,
    load_torch_bytes,
    load_torch_zip,
    torch_zip_bytes,
)
from ptycho_bridge.errors import (
    ArchiveError,
    CorruptArchiveError,
    FormatError,
    PickleDecodeError,
    UnsupportedError,
)
from ptycho_bridge.io.safepickle import Opaque, find_opaque
from ptycho_bridge.io.safezip import SafeZip
from tests._support import REPO  # noqa: E402

TORCH_CASES = ["torch_N64_gs1", "torch_N64_gs2"]


def _bundle_member(fixtures_dir: Path, case: str, name: str) -> tuple[bytes, str]:
    with SafeZip(fixtures_dir / case / "wts.h5.zip", label=f"{case}/wts.h5.zip") as zf:
        return zf.read(name), zf.member_label(name)


def _assert_same(ours: Any, ref: Any, path: str = "") -> None:
    """``ours`` (plain data) equals what torch.load returned, tensors bit-for-bit."""
    import torch

    if isinstance(ref, torch.Tensor):
        expected = ref.detach().resolve_conj().resolve_neg().numpy()
        assert isinstance(ours, np.ndarray), path
        assert ours.dtype == expected.dtype and ours.shape == expected.shape, path
        assert ours.tobytes() == np.ascontiguousarray(expected).tobytes(), path
    elif isinstance(ref, dict):
        assert type(ours) is dict and list(ours) == list(ref), path
        for key in ref:
            _assert_same(ours[key], ref[key], f"{path}/{key}")
    elif isinstance(ref, (list, tuple)):
        assert type(ours) is type(ref) and len(ours) == len(ref), path
        for i, (a, b) in enumerate(zip(ours, ref)):
            _assert_same(a, b, f"{path}[{i}]")
    else:
        assert type(ours) is type(ref) and ours == ref, (path, ours, ref)


# ---------------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", TORCH_CASES)
def test_model_pth_state_dict(fixtures_dir: Path, case: str) -> None:
    data, label = _bundle_member(fixtures_dir, case, "diffraction_to_obj/model.pth")
    state = load_torch_bytes(data, label=label)
    assert type(state) is dict and len(state) == 63
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    first = "model.autoencoder.encoder.blocks.0.conv1.weight"
    assert list(state)[0] == first and state[first].shape[1:] == (1 if case.endswith("gs1") else 4, 3, 3)
    assert all(v.flags.c_contiguous and v.flags.writeable for v in state.values())
    assert find_opaque(state) == []


@pytest.mark.parametrize("case", TORCH_CASES)
def test_autoencoder_sentinel_and_scaling_metadata(fixtures_dir: Path, case: str) -> None:
    data, label = _bundle_member(fixtures_dir, case, "autoencoder/model.pth")
    assert load_torch_bytes(data, label=label) == {"_sentinel": "autoencoder"}
    data, label = _bundle_member(fixtures_dir, case, "torch_scaling_metadata.pt")
    meta = load_torch_bytes(data, label=label)
    assert meta["schema_version"] == "ci-entrypoints-v1" and meta["ci_statistics"] is None
    assert len(meta["data_config"]) == 21 and len(meta["model_config"]) == 57
    assert len(meta["training_config"]) == 44 and len(meta["inference_config"]) == 9
    assert meta["model_config"]["cbam_encoder"] is True
    assert meta["data_config"]["scale_contract_version"] == "ci_intensity_v2"
    gs = 1 if case.endswith("gs1") else 2
    assert meta["data_config"]["grid_size"] == (gs, gs)


def test_lightning_ckpt(fixtures_dir: Path) -> None:
    path = fixtures_dir / "torch_N64_gs1" / "lightning.ckpt"
    with SafeZip(path) as zf:
        assert is_torch_zip(zf)
        ckpt = load_torch_zip(zf)
    assert ckpt["global_step"] == 2 and ckpt["pytorch-lightning_version"] == "2.6.6"
    hp = ckpt["hyper_parameters"]
    assert {"model_config", "data_config", "training_config", "inference_config"} <= set(hp)
    assert hp["model_config"]["cbam_encoder"] is True and hp["generator_output"] == "amp_phase"
    data, label = _bundle_member(fixtures_dir, "torch_N64_gs1", "diffraction_to_obj/model.pth")
    bundle = load_torch_bytes(data, label=label)
    assert list(ckpt["state_dict"]) == list(bundle) and len(bundle) == 63
    assert all(ckpt["state_dict"][k].shape == bundle[k].shape for k in bundle)
    assert find_opaque(ckpt) == []


def test_reading_torch_files_imports_no_torch(fixtures_dir: Path) -> None:
    script = f"""
import sys
from ptycho_bridge.io.safezip import SafeZip
from converters.pytorch.torchzip import load_torch_bytes, load_torch_zip
for case in {TORCH_CASES!r}:
    with SafeZip({str(fixtures_dir)!r} + '/' + case + '/wts.h5.zip') as zf:
        for name in zf.names():
            if name.endswith(('.pth', '.pt')):
                load_torch_bytes(zf.read(name), label=name)
with SafeZip({str(fixtures_dir / "torch_N64_gs1" / "lightning.ckpt")!r}) as zf:
    load_torch_zip(zf)
print(sorted(m for m in ('torch', 'lightning', 'tensorflow', 'dill') if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "case, member",
    [(c, m) for c in TORCH_CASES for m in ("diffraction_to_obj/model.pth", "autoencoder/model.pth",
                                           "torch_scaling_metadata.pt")],
)
def test_matches_torch_load(fixtures_dir: Path, case: str, member: str) -> None:
    torch = pytest.importorskip("torch")
    data, label = _bundle_member(fixtures_dir, case, member)
    ref = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    _assert_same(load_torch_bytes(data, label=label), ref)


def test_lightning_ckpt_matches_torch_load(fixtures_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    path = fixtures_dir / "torch_N64_gs1" / "lightning.ckpt"
    ref = torch.load(path, weights_only=True, map_location="cpu")
    with SafeZip(path) as zf:
        _assert_same(load_torch_zip(zf), ref)  # state_dict, optimizer states (0-d step tensors), hparams


# ---------------------------------------------------------------------------------------------------
# Hand-made torch zips (protocol-2 opcodes written directly, so no torch is needed to build them)
# ---------------------------------------------------------------------------------------------------
def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _t(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(storage_type: str, key: str, numel: int, offset: int, size: tuple, stride: tuple,
            *, storage_module: str = "torch", pid: bytes | None = None) -> bytes:
    """``_rebuild_tensor_v2(persistent(('storage', torch.<type>, key, 'cpu', numel)), …)`` as opcodes."""
    pid = pid if pid is not None else _t(
        [_s("storage"), f"c{storage_module}\n{storage_type}\n".encode(), _s(key), _s("cpu"), _i(numel)]
    )
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n"
        + _t([pid + b"Q", _i(offset), _t([_i(n) for n in size]), _t([_i(n) for n in stride]),
              b"\x89", b"ccollections\nOrderedDict\n)R"])
        + b"R"
    )


def _data_pkl(tensors: dict[str, bytes]) -> bytes:
    body = b"".join(_s(name) + blob for name, blob in tensors.items())
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + body + b"u."


def _torch_zip(data_pkl: bytes, storages: dict[str, bytes], *, prefix: str = "archive",
               byteorder: bytes | None = b"little") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", b"3\n")
    return buf.getvalue()


def _bf16_bits(values: np.ndarray) -> bytes:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def _handmade() -> tuple[bytes, dict[str, np.ndarray]]:
    base = np.arange(24, dtype=np.float32)
    longs = np.arange(-3, 9, dtype=np.int64)
    cplx = (np.arange(6) - 1j * np.arange(6)).astype(np.complex64)
    bf = np.array([1.0, -2.5, 0.15625, 2.0**100], dtype=np.float32)
    bools = np.array([True, False, True])
    halves = np.linspace(-1, 1, 7).astype(np.float16)
    tensors = {
        "w": _tensor("FloatStorage", "0", 24, 0, (2, 3, 4), (12, 4, 1)),
        "w_t": _tensor("FloatStorage", "0", 24, 0, (4, 3, 2), (1, 4, 12)),  # a transposed view of "0"
        "w_slice": _tensor("FloatStorage", "0", 24, 5, (3,), (2,)),
        "scalar": _tensor("FloatStorage", "0", 24, 7, (), ()),
        "empty": _tensor("FloatStorage", "0", 24, 0, (0, 5), (5, 1)),
        "long": _tensor("LongStorage", "1", 12, 0, (3, 4), (4, 1)),
        "cplx": _tensor("ComplexFloatStorage", "2", 6, 0, (2, 3), (3, 1)),
        "bf16": _tensor("BFloat16Storage", "3", 4, 0, (4,), (1,)),
        "bool": _tensor("BoolStorage", "4", 3, 0, (3,), (1,)),
        "half": _tensor("HalfStorage", "5", 7, 0, (7,), (1,)),
        "param": b"ctorch._utils\n_rebuild_parameter\n("
                 + _tensor("FloatStorage", "0", 24, 0, (4,), (1,)) + b"\x88ccollections\nOrderedDict\n)Rt" + b"R",
        "from_type": b"ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n"
                     + _tensor("FloatStorage", "0", 24, 2, (2,), (1,))[len(b"ctorch._utils\n_rebuild_tensor_v2\n"):-1]
                     + b"}tR",
    }
    storages = {"0": base.tobytes(), "1": longs.tobytes(), "2": cplx.tobytes(), "3": _bf16_bits(bf),
                "4": bools.tobytes(), "5": halves.tobytes()}
    expected = {
        "w": base.reshape(2, 3, 4),
        "w_t": base.reshape(2, 3, 4).transpose(2, 1, 0),
        "w_slice": base[5:11:2],
        "scalar": np.array(base[7]),
        "empty": np.zeros((0, 5), np.float32),
        "long": longs.reshape(3, 4),
        "cplx": cplx.reshape(2, 3),
        "bf16": bf,  # all exactly representable in bfloat16
        "bool": bools,
        "half": halves,
        "param": base[:4],
        "from_type": base[2:4],
    }
    return _torch_zip(_data_pkl(tensors), storages), expected


def test_handmade_torch_zip() -> None:
    data, expected = _handmade()
    got = load_torch_bytes(data, label="hand.pt")
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert np.array_equal(got[key], value), key
        assert got[key].flags.c_contiguous, key


def test_handmade_torch_zip_matches_torch_load() -> None:
    torch = pytest.importorskip("torch")
    data, _ = _handmade()
    ref = torch.load(io.BytesIO(data), weights_only=True)
    ref["bf16"] = ref["bf16"].float()  # we widen bfloat16 to float32, exactly
    _assert_same(load_torch_bytes(data, label="hand.pt"), dict(ref))


def test_storages_read_once_and_not_shared() -> None:
    data, _ = _handmade()
    got = load_torch_bytes(data, label="hand.pt")
    got["w"][0, 0, 0] = 99.0
    assert got["w_t"][0, 0, 0] == 0.0 and got["w_slice"][0] == 5.0  # each tensor is its own copy


def test_untyped_storage_is_bytes() -> None:
    pkl = _data_pkl({"u": _tensor("UntypedStorage", "0", 4, 0, (4,), (1,), storage_module="torch.storage")})
    got = load_torch_bytes(_torch_zip(pkl, {"0": b"\x01\x02\x03\x04"}), label="u.pt")
    assert got["u"].dtype == np.uint8 and got["u"].tolist() == [1, 2, 3, 4]


def test_storage_smaller_than_tensor() -> None:
    pkl = _data_pkl({"w": _tensor("FloatStorage", "0", 4, 1, (2, 2), (2, 1))})  # needs 5 elements
    with pytest.raises(PickleDecodeError, match=r"storage smaller than tensor: storage 0 holds 4 float32 "
                                                r"elements, tensor needs 5") as info:
        load_torch_bytes(_torch_zip(pkl, {"0": bytes(16)}), label="small.pt")
    assert info.value.member == "small.pt:archive/data.pkl"


def test_storage_size_mismatch() -> None:
    pkl = _data_pkl({"w": _tensor("FloatStorage", "0", 4, 0, (4,), (1,))})
    with pytest.raises(PickleDecodeError, match="storage 0 holds 12 bytes, expected 16") as info:
        load_torch_bytes(_torch_zip(pkl, {"0": bytes(12)}), label="short.pt")
    assert info.value.member == "short.pt:archive/data/0"


def test_missing_storage_key() -> None:
    pkl = _data_pkl({"w": _tensor("FloatStorage", "7", 4, 0, (4,), (1,))})
    with pytest.raises(PickleDecodeError, match="storage 7 is missing"):
        load_torch_bytes(_torch_zip(pkl, {"0": bytes(16)}), label="missing.pt")


@pytest.mark.parametrize(
    "pid, message",
    [
        (_t([_s("storage"), b"cos\nsystem\n", _s("0"), _s("cpu"), _i(4)]), "unsupported storage type os.system"),
        (_t([_s("storage"), b"ctorch\nQInt8Storage\n", _s("0"), _s("cpu"), _i(4)]), "unsupported storage type"),
        (_t([_s("storage"), b"ctorch\nFloatStorage\n", _s("../x"), _s("cpu"), _i(4)]), "bad storage key"),
        (_t([_s("storage"), b"ctorch\nFloatStorage\n", _s("0"), _s("cpu"), _i(-1)]), "bad element count"),
        (_t([_s("module"), _s("x")]), "unsupported persistent id"),
        (_s("storage"), "unsupported persistent id"),
    ],
)
def test_bad_persistent_ids(pid: bytes, message: str) -> None:
    pkl = _data_pkl({"w": _tensor("FloatStorage", "0", 4, 0, (4,), (1,), pid=pid)})
    with pytest.raises(PickleDecodeError, match=message):
        load_torch_bytes(_torch_zip(pkl, {"0": bytes(16)}), label="bad.pt")


def test_huge_expanded_tensor_is_bounded() -> None:
    """A stride-0 tensor claiming 2**40 elements over one float must not allocate terabytes."""
    pkl = _data_pkl({"w": _tensor("FloatStorage", "0", 1, 0, (2**20, 2**20), (0, 0))})
    with pytest.raises(ArchiveError, match="broadcast view larger than"):
        load_torch_bytes(_torch_zip(pkl, {"0": bytes(4)}), label="bomb.pt")


def test_hostile_data_pkl_stays_inert(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    pkl = b"\x80\x02}(" + _s("x") + b"cos\nsystem\n" + _t([_s(f"touch {sentinel}")]) + b"Ru."
    got = load_torch_bytes(_torch_zip(pkl, {}), label="evil.pt")
    assert isinstance(got["x"], Opaque) and find_opaque(got) == ["os.system"]
    assert not sentinel.exists()


def test_container_level_refusals() -> None:
    with pytest.raises(UnsupportedError, match="big-endian"):
        load_torch_bytes(_torch_zip(_data_pkl({}), {}, byteorder=b"big"), label="be.pt")
    with pytest.raises(UnsupportedError, match="legacy"):
        load_torch_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.", label="old.pt")
    with pytest.raises(CorruptArchiveError):
        load_torch_bytes(b"not a zip at all", label="junk.pt")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/data.pkl", b"N.")
        zf.writestr("b/data.pkl", b"N.")
    with pytest.raises(FormatError, match="not a torch zip"):
        load_torch_bytes(buf.getvalue(), label="two.pt")
    with SafeZip(buf.getvalue()) as zf:
        assert not is_torch_zip(zf)
    # no byteorder member (older torch): little-endian assumed
    assert load_torch_bytes(_torch_zip(_data_pkl({}), {}, byteorder=None), label="ok.pt") == {}


# ---------------------------------------------------------------------------------------------------
# Fuzzing: mutate data.pkl and storages of a hand-made zip; only ArchiveError may escape
# ---------------------------------------------------------------------------------------------------
_SEED_PKL = _data_pkl({
    "w": _tensor("FloatStorage", "0", 24, 0, (2, 3, 4), (12, 4, 1)),
    "v": _tensor("FloatStorage", "0", 24, 3, (3, 2), (1, 3)),
    "l": _tensor("LongStorage", "1", 2, 0, (2,), (1,)),
})
_SEED_STORAGES = {"0": bytes(96), "1": bytes(16)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(_SEED_PKL) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, len(_SEED_PKL))),
    storage_len=st.integers(0, 128),
)
def test_fuzz_torch_zip(edits: list[tuple[int, int]], cut: int | None, storage_len: int) -> None:
    pkl = bytearray(_SEED_PKL)
    for pos, value in edits:
        pkl[pos] = value
    if cut is not None:
        del pkl[cut:]
    data = _torch_zip(bytes(pkl), {"0": bytes(storage_len), "1": _SEED_STORAGES["1"]})
    try:
        load_torch_bytes(data, label="fuzz.pt")
    except ArchiveError:
        pass


# -- writing: torch_zip_bytes --------------------------------------------------------------------
def _arrays() -> "collections.OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(7)
    return collections.OrderedDict(
        w=rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        d=rng.standard_normal(5),  # float64
        i64=np.arange(-3, 9, dtype=np.int64).reshape(3, 4),
        i32=np.array([2**31 - 1, -(2**31)], dtype=np.int32),
        b=np.array([[True, False], [False, True]]),
        scalar=np.array(3.5, dtype=np.float32),
        empty=np.zeros((0, 7), dtype=np.float32),
        transposed=np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
        big_endian=np.arange(6, dtype=">f4"),
    )


def test_torch_load_reads_our_zip_exactly() -> None:
    torch = pytest.importorskip("torch")
    obj = _arrays()
    loaded = torch.load(io.BytesIO(torch_zip_bytes(obj)), weights_only=True)
    assert type(loaded) is collections.OrderedDict and list(loaded) == list(obj)
    for key, want in obj.items():
        got = loaded[key]
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == want.shape, key
        assert got.numpy().dtype == want.dtype.newbyteorder("="), key
        assert np.array_equal(got.numpy(), want), key


def test_torch_load_reads_plain_containers() -> None:
    torch = pytest.importorskip("torch")
    obj = {"s": "é", "n": None, "t": True, "f": False, "i": [0, 255, 256, 65536, -1, 2**31, -(2**40), 2**80],
           "x": 2.5e-300, "tup": (1, (2, 3), (4, 5, 6, 7)), "empty": {}, "lst": [], "nested": {"a": [np.arange(3)]}}
    loaded = torch.load(io.BytesIO(torch_zip_bytes(obj)), weights_only=True)
    assert loaded["nested"]["a"][0].tolist() == [0, 1, 2]
    loaded["nested"]["a"][0] = obj["nested"]["a"][0] = None
    assert loaded == obj


def test_our_reader_reads_our_zip_identically() -> None:
    obj = _arrays()
    back = load_torch_bytes(torch_zip_bytes(obj, prefix="model"), label="ours.pth")
    assert list(back) == list(obj)
    for key, want in obj.items():
        assert back[key].dtype == want.dtype.newbyteorder("=") and np.array_equal(back[key], want), key


def test_zip_layout_alignment_and_determinism(tmp_path: Path) -> None:
    data = torch_zip_bytes(_arrays(), prefix="model")
    assert data == torch_zip_bytes(_arrays(), prefix="model")  # equal input → equal bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names[:4] == ["model/data.pkl", "model/.format_version", "model/.storage_alignment", "model/byteorder"]
        assert names[-2:] == ["model/version", "model/.data/serialization_id"]
        assert zf.read("model/byteorder") == b"little" and zf.read("model/version") == b"3\n"
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            local = data[info.header_offset : info.header_offset + 30]
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
    torch = pytest.importorskip("torch")
    path = tmp_path / "x.pth"
    path.write_bytes(data)
    loaded = torch.load(path, weights_only=True, mmap=True)  # mmap needs the 64-byte alignment
    assert np.array_equal(loaded["w"].numpy(), _arrays()["w"])


@pytest.mark.parametrize("bad", [np.zeros(2, np.complex64), np.array(["a"]), object(), b"bytes", {1, 2}])
def test_unsupported_values_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        torch_zip_bytes({"x": bad})
