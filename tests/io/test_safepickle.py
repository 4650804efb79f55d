"""Tests for ptycho_bridge.safepickle: real upstream pickles, hostile pickles, bounds and fuzzing."""

from __future__ import annotations

import argparse
import builtins
import collections
import dataclasses
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho_bridge.errors import ArchiveError, ArchiveLimitError, PickleDecodeError
from ptycho_bridge.io.safepickle import (
    Global,
    Opaque,
    PersistentRef,
    PickleLimits,
    Record,
    Reduce,
    decode,
    find_opaque,
    globals_in,
    load,
    load_inert,
)
from ptycho_bridge.io.safezip import SafeZip
from tests._support import REPO  # noqa: E402

TF_CASES = ["tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1"]
TORCH_CASES = ["torch_N64_gs1", "torch_N64_gs2"]
MODELS = ["diffraction_to_obj", "autoencoder"]


def _member(fixtures_dir: Path, case: str, name: str) -> tuple[bytes, str]:
    with SafeZip(fixtures_dir / case / "wts.h5.zip", label=f"{case}/wts.h5.zip") as zf:
        return zf.read(name), zf.member_label(name)


# ---------------------------------------------------------------------------------------------------
# Real upstream pickles
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", TF_CASES)
@pytest.mark.parametrize("model", MODELS)
def test_tf_params_dill(fixtures_dir: Path, case: str, model: str) -> None:
    data, label = _member(fixtures_dir, case, f"{model}/params.dill")
    params = load(data, member=label)
    golden = np.load(fixtures_dir / case / "golden.npz")
    config = json.loads((fixtures_dir / case / "golden.json").read_text())["config"]

    assert isinstance(params, dict) and len(params) == 72
    assert params["N"] == config["N"] and params["gridsize"] == config["gridsize"]
    assert params["_version"] == "1.0"
    probe = params["probe"]
    assert isinstance(probe, np.ndarray)
    assert probe.dtype == np.complex64 and probe.shape == (config["N"], config["N"], 1)
    assert np.array_equal(probe, golden["probe"])
    assert probe.tobytes() == np.ascontiguousarray(golden["probe"]).tobytes()  # bit-for-bit
    assert isinstance(params["intensity_scale"], float)
    assert params["intensity_scale"] == float(golden["intensity_scale"])
    assert find_opaque(params) == []
    # every other value is a primitive
    assert all(v is None or isinstance(v, (bool, int, float, str)) for k, v in params.items() if k != "probe")
    assert globals_in(data, label) == [
        ("tensorflow.python.framework.ops", "convert_to_tensor"),
        ("dill._dill", "_create_array"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    ]


@pytest.mark.parametrize("case", TORCH_CASES)
@pytest.mark.parametrize("model", MODELS)
def test_torch_params_dill(fixtures_dir: Path, case: str, model: str) -> None:
    data, label = _member(fixtures_dir, case, f"{model}/params.dill")
    params = load(data, member=label)
    assert isinstance(params, dict) and len(params) == 63
    assert params["_version"] == "2.0-pytorch" and params["N"] == 64 and "probe" not in params
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in params.values())
    assert globals_in(data, label) == []


@pytest.mark.parametrize("case", TF_CASES + TORCH_CASES)
def test_manifest_dill(fixtures_dir: Path, case: str) -> None:
    data, label = _member(fixtures_dir, case, "manifest.dill")
    manifest = load(data, member=label)
    if case.startswith("tf"):
        assert manifest == {"models": ["autoencoder", "diffraction_to_obj"], "version": "1.0"}
    else:
        assert manifest == {"models": ["diffraction_to_obj", "autoencoder"], "version": "2.0-pytorch"}


@pytest.mark.parametrize("case", TF_CASES)
def test_custom_objects_dill_stays_opaque(fixtures_dir: Path, case: str) -> None:
    data, label = _member(fixtures_dir, case, "diffraction_to_obj/custom_objects.dill")
    objects = load(data, member=label)
    assert isinstance(objects, dict) and len(objects) == 18
    assert all(isinstance(v, Opaque) for v in objects.values())
    names = find_opaque(objects)
    assert len(names) == 18
    assert "ptycho.model.IntensityScaler" in names and "ptycho.tf_helper.realspace_loss" in names
    assert objects["IntensityScaler"].type_name == "ptycho.model.IntensityScaler"
    assert all(n.startswith(("ptycho.model.", "ptycho.tf_helper.", "ptycho.custom_layers.")) for n in names)
    # other test modules may import tensorflow in this process; the fresh-interpreter test below
    # proves no framework is imported — here only the archive's own package must stay unimported
    assert "ptycho" not in sys.modules


def test_reading_every_dill_imports_no_framework(fixtures_dir: Path) -> None:
    """In a fresh interpreter: decoding every .dill of every case imports neither TF, torch, dill nor ptycho."""
    script = f"""
import sys
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.io.safepickle import load
for case in {TF_CASES + TORCH_CASES!r}:
    with SafeZip({str(fixtures_dir)!r} + '/' + case + '/wts.h5.zip') as zf:
        for name in zf.names():
            if name.endswith('.dill'):
                load(zf.read(name), member=name)
print(sorted(m for m in ('tensorflow', 'torch', 'dill', 'ptycho', 'keras') if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------
# Round trips of ordinary Python/numpy values through pickle.dumps
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Config:
    n: int
    name: str
    path: pathlib.Path


ALL_PROTOCOLS = list(range(0, pickle.HIGHEST_PROTOCOL + 1))


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
def test_plain_values_round_trip(protocol: int) -> None:
    value = {
        "i": [0, 1, -1, 255, 65535, 2**31, -(2**31) - 1, 2**100, -(2**70)],
        "f": [0.5, -1e300, float("inf")],
        "s": ["", "ascii", "ünïcödé ☃", "a\nb\\c'\""],
        "b": [b"", b"\x00\xff" * 300, bytearray(b"xy")],
        "t": ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)),
        "set": {1, 2, 3},
        "fs": frozenset({"a"}),
        "none": None,
        "bool": [True, False],
        "c": 1 + 2j,
        "nested": {"k": [{"x": (1, [2])}]},
        (1, "tuple-key"): "ok",
    }
    got = load(pickle.dumps(value, protocol=protocol), member="plain.pkl")
    expected = dict(value)
    expected["b"] = [b"", b"\x00\xff" * 300, b"xy"]  # bytearray decodes to bytes
    assert got == expected


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
def test_shared_references_stay_shared(protocol: int) -> None:
    inner = [1, 2]
    got = load(pickle.dumps({"a": inner, "b": inner}, protocol=protocol), member="m")
    assert got == {"a": [1, 2], "b": [1, 2]} and got["a"] is got["b"]


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
def test_ordered_dict_path_records(protocol: int) -> None:
    value = {
        "od": collections.OrderedDict([("z", 1), ("a", 2)]),
        "empty_od": collections.OrderedDict(),
        "posix": pathlib.PurePosixPath("/data/run 1/x.npz"),
        "path": pathlib.Path("rel/dir"),
        "win": pathlib.PureWindowsPath("C:/a/b"),
        "ns": types.SimpleNamespace(a=1, b="x"),
        "argns": argparse.Namespace(lr=0.1),
        "dc": _Config(3, "cfg", pathlib.Path("/tmp/f")),
    }
    got = load(pickle.dumps(value, protocol=protocol), member="m")
    assert got["od"] == {"z": 1, "a": 2} and type(got["od"]) is dict and list(got["od"]) == ["z", "a"]
    assert got["empty_od"] == {}
    assert got["posix"] == "/data/run 1/x.npz" and got["path"] == "rel/dir" and got["win"] == "C:\\a\\b"
    assert isinstance(got["ns"], Record) and got["ns"].type_name == "types.SimpleNamespace"
    assert got["ns"].fields == {"a": 1, "b": "x"}
    assert got["argns"].type_name == "argparse.Namespace" and got["argns"].fields == {"lr": 0.1}
    assert got["dc"].type_name == f"{__name__}._Config"
    assert got["dc"].fields == {"n": 3, "name": "cfg", "path": "/tmp/f"}
    assert find_opaque(got) == []


NUMPY_VALUES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    (np.arange(6) + 1j * np.arange(6)).astype(np.complex64).reshape(2, 3, 1),
    np.arange(5, dtype=">f8"),
    np.array([True, False]),
    np.array(["ab", "c"]),
    np.array([b"xy", b"z"]),
    np.zeros((0, 3), dtype=np.uint16),
    np.array(7.5, dtype=np.float64),
    np.arange(24, dtype=np.int8).reshape(2, 3, 4)[:, ::2, 1:],  # non-contiguous: pickled as a copy
]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("index", range(len(NUMPY_VALUES)))
def test_numpy_arrays_round_trip(protocol: int, index: int) -> None:
    arr = NUMPY_VALUES[index]
    got = load(pickle.dumps(arr, protocol=protocol), member="a.pkl")
    assert isinstance(got, np.ndarray)
    assert got.dtype == arr.dtype and got.shape == arr.shape
    assert np.array_equal(got, arr)
    assert got.flags.writeable  # a copy, not a view into the pickle bytes


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_scalars_and_dtypes(protocol: int) -> None:
    value = [np.float32(1.5), np.int64(-3), np.complex64(1 - 2j), np.bool_(True), np.dtype("<i2")]
    got = load(pickle.dumps(value, protocol=protocol), member="s.pkl")
    assert got[:4] == value[:4]
    assert [type(v) for v in got[:4]] == [type(v) for v in value[:4]]
    assert got[4] == np.dtype("<i2")


def test_object_and_structured_arrays_refused() -> None:
    data = pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)
    inert = load_inert(data, member="obj.pkl")  # reading is fine; nothing was built
    with pytest.raises(PickleDecodeError, match="object") as info:
        decode(inert, member="obj.pkl")
    assert info.value.member == "obj.pkl"
    with pytest.raises(PickleDecodeError, match="structured"):
        load(pickle.dumps(np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), protocol=4), member="rec.pkl")


def test_array_size_mismatch_refused() -> None:
    data = pickle.dumps(np.arange(4, dtype=np.float32), protocol=3)
    raw = np.arange(4, dtype=np.float32).tobytes()
    tampered = data.replace(b"C\x10" + raw, b"C\x0c" + raw[:12])  # SHORT_BINBYTES of 16 -> 12 bytes
    assert tampered != data
    with pytest.raises(PickleDecodeError, match="12 bytes"):
        load(tampered, member="a.pkl")


# ---------------------------------------------------------------------------------------------------
# Hostile pickles: nothing runs, everything is reported
# ---------------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, func, args):  # noqa: ANN001
        self.func, self.args = func, args

    def __reduce__(self):  # noqa: ANN204
        return self.func, self.args


def _hostile_payloads(sentinel: Path) -> list[tuple[str, bytes, set[str]]]:
    cmd = f"touch {sentinel}"
    cases: list[tuple[str, bytes, set[str]]] = []
    for protocol in ALL_PROTOCOLS:
        cases.append((f"os.system p{protocol}", pickle.dumps({"x": _Evil(os.system, (cmd,))}, protocol=protocol),
                      {f"{os.system.__module__}.system"}))
        cases.append((f"eval p{protocol}", pickle.dumps([_Evil(builtins.eval, (f"__import__('os').system({cmd!r})",))],
                                                        protocol=protocol), {"builtins.eval"}))
        cases.append((f"Popen p{protocol}", pickle.dumps(_Evil(subprocess.Popen, (["touch", str(sentinel)],)),
                                                         protocol=protocol), {"subprocess.Popen"}))
    quoted = repr(cmd).encode()
    cases += [
        # getattr(__import__('os'), 'system')(cmd), written by hand in protocol 0
        ("getattr chain", b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S" + quoted[1:-1].join(
            [b"'", b"'"]) + b"\ntR.", {"builtins.getattr", "builtins.__import__"}),
        ("INST", b"(S'" + cmd.encode() + b"'\nios\nsystem\n.", {"os.system"}),
        ("OBJ", b"(cos\nsystem\nS'" + cmd.encode() + b"'\no.", {"os.system"}),
        ("NEWOBJ + BUILD", b"\x80\x02csubprocess\nPopen\n]\x85\x81}b.", {"subprocess.Popen"}),
        ("BUILD on a global", b"\x80\x02cos\nenviron\n}b.", {"os.environ"}),
        ("dill code", b"\x80\x04\x8c\ndill._dill\x8c\n_load_type\x93\x8c\x08CodeType\x85R.", {"dill._dill._load_type"}),
    ]
    return cases


def test_hostile_pickles_never_run(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    modules_before = set(sys.modules)
    for title, data, expected in _hostile_payloads(sentinel):
        inert = load_inert(data, member="evil.pkl")
        decoded = decode(inert, member="evil.pkl")
        names = set(find_opaque(decoded))
        # os.system pickles as posix.system on Linux
        names = {n.replace("posix.", "os.") for n in names}
        expected = {n.replace("posix.", "os.") for n in expected}
        assert expected <= names, title
    assert not sentinel.exists()
    assert set(sys.modules) == modules_before  # nothing was imported either


def test_opaque_reports_name_of_call() -> None:
    got = load(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.", member="params.dill")
    assert isinstance(got, Opaque) and got.type_name == "os.system" and got.kind == "call"
    assert isinstance(got.raw, Reduce) and got.raw.func == Global("os", "system") and got.raw.args == ("ls",)
    assert find_opaque({"x": [got]}) == ["os.system"]


def test_persistent_ids() -> None:
    data = b"\x80\x02(X\x01\x00\x00\x00aK\x05tQPxyz\n\x86."
    inert = load_inert(data, member="p")
    assert isinstance(inert[0], PersistentRef) and inert[0].pid == ("a", 5) and inert[1].pid == "xyz"
    seen = []
    got = load(data, member="p", persistent_load=lambda pid: seen.append(pid) or f"resolved:{pid}")
    assert got == ("resolved:('a', 5)", "resolved:xyz") and seen == [("a", 5), "xyz"]

    def boom(pid: object) -> None:
        raise KeyError(pid)

    with pytest.raises(PickleDecodeError, match="KeyError"):
        load_inert(data, member="p", persistent_load=boom)


# ---------------------------------------------------------------------------------------------------
# Bounds and malformed streams
# ---------------------------------------------------------------------------------------------------
def test_deeply_nested_lists_hit_the_depth_limit() -> None:
    n = 100_000
    data = b"\x80\x04" + b"]" * n + b"a" * (n - 1) + b"."
    with pytest.raises(ArchiveLimitError, match="deeper than 200"):
        load_inert(data, member="deep.pkl")
    with pytest.raises(ArchiveLimitError):
        load_inert(b"\x80\x04" + b"(" * n + b")" + b"t" * n + b".", member="deep.pkl")  # nested tuples
    with pytest.raises(ArchiveLimitError):
        load_inert(b"\x80\x04" + b")" + b"\x85" * n + b"\x8f(" + b"\x90.", member="deep.pkl")  # hashed


def test_nesting_below_the_limit_decodes() -> None:
    value: list = []
    for _ in range(150):
        value = [value]
    got = load(pickle.dumps(value, protocol=4), member="ok.pkl")
    depth = 0
    while got:
        got, depth = got[0], depth + 1
    assert depth == 150
    with pytest.raises(ArchiveLimitError):
        load(pickle.dumps(value, protocol=4), member="ok.pkl", limits=PickleLimits(max_depth=100))


def test_depth_grown_after_nesting_is_caught() -> None:
    """Lists nested first and filled later (via memo) defeat a construction-time count."""
    n = 300
    data = b"\x80\x02" + b"".join(b"]r" + struct.pack("<I", i) for i in range(n))
    data += b"0" * n  # POP them all again
    data += b"".join(b"j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i + 1) + b"a0" for i in range(n - 1))
    data += b"j\x00\x00\x00\x00."
    with pytest.raises(ArchiveLimitError):
        load_inert(data, member="grow.pkl")


def test_self_reference_refused() -> None:
    lst: list = []
    lst.append(lst)
    with pytest.raises(PickleDecodeError, match="self-referencing"):
        load_inert(pickle.dumps(lst, protocol=2), member="cyc.pkl")


def test_memo_stack_and_op_limits() -> None:
    data = b"\x80\x04" + b"N\x94" * 50 + b"N."
    with pytest.raises(ArchiveLimitError, match="memo"):
        load_inert(data, member="m", limits=PickleLimits(max_memo=10))
    with pytest.raises(ArchiveLimitError, match="stack"):
        load_inert(b"\x80\x04" + b"N" * 50 + b".", member="m", limits=PickleLimits(max_stack=10))
    with pytest.raises(ArchiveLimitError, match="opcodes"):
        load_inert(b"\x80\x04" + b"N0" * 50 + b"N.", member="m", limits=PickleLimits(max_ops=20))


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"x.",  # BINBYTES8 claiming 2**60 bytes
        b"\x80\x04\x8d" + struct.pack("<Q", 2**63) + b".",  # BINUNICODE8
        b"\x80\x04\x96" + struct.pack("<Q", 2**64 - 1) + b".",  # BYTEARRAY8
        b"\x80\x02B\xff\xff\xff\xff.",  # BINBYTES
        b"\x80\x02T\xff\xff\xff\x7f.",  # BINSTRING
        b"\x80\x02\x8b\xff\xff\xff\x7f.",  # LONG4
        b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"N.",  # FRAME
    ],
)
def test_huge_declared_lengths_fail_cleanly(data: bytes) -> None:
    with pytest.raises(PickleDecodeError, match="truncated|frame longer"):
        load_inert(data, member="huge.pkl")


def test_truncated_real_pickle(fixtures_dir: Path) -> None:
    data, label = _member(fixtures_dir, "tf_N64_gs1", "diffraction_to_obj/params.dill")
    for cut in (0, 1, 2, 11, 500, 1700, 20_000, len(data) - 1):
        with pytest.raises(PickleDecodeError, match=r"at byte \d+") as info:
            load_inert(data[:cut], member=label)
        assert info.value.member == label and label in str(info.value)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x80\x06N.", "protocol"),
        (b"\x80\x02\x82\x01.", "extension"),
        (b"\x80\x05\x97.", "out-of-band"),
        (b"\x80\x02\xff.", "unknown opcode"),
        (b"\x80\x02h\x05.", "memo"),
        (b"\x80\x02a.", "underflow"),
        (b"\x80\x02NN.", "unbalanced"),
        (b"\x80\x02t.", "MARK"),
        (b"\x80\x02K\x01K\x02R.", "not a tuple"),
        (b"\x80\x02}(NNNu.", "odd"),
        (b"\x80\x02}]Ns.", "unhashable"),
        (b"Iabc\n.", "integer"),
    ],
)
def test_malformed_streams(data: bytes, message: str) -> None:
    with pytest.raises(PickleDecodeError, match=message) as info:
        load_inert(data, member="bad.pkl")
    assert str(info.value).startswith("bad.pkl: ")


def test_decode_wraps_foreign_errors() -> None:
    bad_shape = Reduce(Global("numpy._core.multiarray", "_reconstruct"),
                       (Global("numpy", "ndarray"), (0,), b"b"), state=(1, (-1,), np.dtype("f4"), False, b""))
    with pytest.raises(PickleDecodeError, match="shape"):
        decode(bad_shape, member="x")
    tensor = Reduce(Global("tensorflow.python.framework.ops", "convert_to_tensor"), (np.zeros(2),))
    with pytest.raises(PickleDecodeError, match="unhashable") as info:
        decode({tensor: 1}, member="x")  # an ndarray cannot be a dict key: TypeError, wrapped
    assert info.value.member == "x"


# ---------------------------------------------------------------------------------------------------
# Fuzzing: only ArchiveError subclasses may escape
# ---------------------------------------------------------------------------------------------------
def _load_everything(data: bytes) -> None:
    try:
        tree = load_inert(data, member="fuzz.pkl", limits=PickleLimits(max_array_bytes=1 << 26))
        find_opaque(decode(tree, member="fuzz.pkl", limits=PickleLimits(max_array_bytes=1 << 26)))
    except ArchiveError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data: bytes) -> None:
    _load_everything(data)
    _load_everything(b"\x80\x04" + data)


_SEEDS = [
    pickle.dumps({"a": [1, 2.5, "x", b"y", None, True], "t": (1, (2, 3)), "s": {1}}, protocol=p) for p in range(6)
] + [
    pickle.dumps([np.arange(6, dtype=np.float32).reshape(2, 3), collections.OrderedDict(a=np.int64(3))], protocol=p)
    for p in (2, 4, 5)
] + [pickle.dumps(types.SimpleNamespace(p=pathlib.PurePosixPath("/x")), protocol=4)]


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(_SEEDS))
def test_fuzz_mutated_pickles(data: bytes) -> None:
    _load_everything(data)


@pytest.fixture(scope="module")
def real_pickles(fixtures_dir: Path) -> list[bytes]:
    with SafeZip(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip") as zf:
        tf = [zf.read(n) for n in ("manifest.dill", "diffraction_to_obj/custom_objects.dill")]
        params = zf.read("diffraction_to_obj/params.dill")
    return tf + [params]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_real_pickles(real_pickles: list[bytes], data: st.DataObject) -> None:
    _load_everything(data.draw(_mutated(real_pickles)))


def test_shared_subtrees_do_not_blow_up() -> None:
    """'Billion laughs': 60 levels of (x, x) reach 2**60 leaves through only 60 distinct tuples."""
    dag = b"\x80\x02K\x01q\x00"  # memo[0] = 1
    for i in range(60):  # memo[i + 1] = (memo[i], memo[i])
        dag += b"0h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1])
    got = decode(load_inert(dag + b".", member="laughs.pkl"), member="laughs.pkl")
    assert got[0] is got[1] and find_opaque(got) == []  # decoded once per distinct node, still shared
    # hashing it would take 2**60 steps: refused as a dict key, a set item, and after decoding
    with pytest.raises(ArchiveLimitError, match="dict key or set item"):
        load_inert(dag + b"0}h\x3cNs.", member="laughs.pkl")
    with pytest.raises(ArchiveLimitError, match="dict key or set item"):
        load_inert(dag + b"0\x8f(h\x3c\x90.", member="laughs.pkl")
    inert = load_inert(dag + b"0}ctorch\nSize\nh\x3c\x85RNs.", member="laughs.pkl")  # key is a record
    with pytest.raises(ArchiveLimitError, match="dict key or set item"):
        decode(inert, member="laughs.pkl")
    assert "args" in repr(next(iter(inert)))  # reprs of inert records are shallow


def test_hash_flooding_int_keys_refused() -> None:
    """Integers equal modulo 2**61 - 1 share one hash; thousands of them would make dict inserts quadratic."""
    keys = b"".join(b"\x8a\x0a" + (k * (2**61 - 1)).to_bytes(10, "little", signed=True) + b"N" for k in range(8, 5000))
    with pytest.raises(PickleDecodeError, match="hash flooding"):
        load_inert(b"\x80\x02}(" + keys + b"u.", member="flood.pkl")
    assert load(pickle.dumps({2**63 - 1: 1, -(2**63): 2, (2**64 - 1, 5): 3}), member="ok.pkl") == {
        2**63 - 1: 1, -(2**63): 2, (2**64 - 1, 5): 3}
