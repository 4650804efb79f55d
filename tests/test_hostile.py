"""The hostile-archive corpus: every past or plausible attack on an archive reader, as a named case.

Each case is built in ``tmp_path`` from real fixture members (or the bundled sample) with one thing
made hostile or corrupt. For every case: reading raises a specific :class:`ArchiveError` subclass
whose message names the member; ``inspect``, ``validate`` and ``migrate`` exit 1 with one error line;
no code runs (the payloads would ``touch`` a sentinel file, which never appears); nothing is written
(the folder is unchanged). Cases whose defect sits in tensor *values* (NaN/Inf, a dtype that lies
about lazily loaded data, links a lazy reader never follows) are ``stage="load"``: ``inspect`` reads
metadata only and succeeds, ``validate`` (which loads every tensor) and ``migrate`` fail. See
docs/security.md for the policy.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import json
import marshal
import os
import pickle
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.errors import (
    ArchiveError,
    ArchiveLimitError,
    CorruptArchiveError,
    FormatError,
    PickleDecodeError,
    UnsafeArchiveError,
    UnsupportedError,
)
from ptycho_bridge.ops.sample import write_sample
from scripts.fuzz_mutators import nested_gcol
from tests._support import FIXTURES_DIR, REPO  # noqa: E402

FIX = FIXTURES_DIR
KERAS = "diffraction_to_obj/model.keras"
TF_KERNEL = "layers/conv2d/vars/0"  # first encoder conv kernel, (3, 3, 1, 32) float32


# ---------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------
class _Evil:
    """Pickles as ``func(*args)``; never called by anyone in these tests."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args: Any) -> None:  # pickle requires reduce functions to be callable
        raise AssertionError("never called")


def _os_system(cmd: str) -> _Evil:
    return _Evil(os.system, cmd)


def _eval(cmd: str) -> _Evil:
    return _Evil(builtins.eval, f"__import__('os').system({cmd!r})")


def _getattr_chain(cmd: str) -> _Evil:
    # builtins.getattr(builtins.__import__('os'), 'system')(cmd)
    return _Evil(_Evil(builtins.getattr, _Evil(builtins.__import__, "os"), "system"), cmd)


def _popen(argv: list[str]) -> _Evil:
    return _Evil(subprocess.Popen, argv)


def _dumps(obj: Any, protocol: int = 4) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_members(data: bytes | Path) -> dict[str, bytes]:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with zipfile.ZipFile(src) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def with_member(zipped: bytes, name: str, data: bytes | None) -> bytes:
    """A copy of a zip with one member replaced, added (new name) or removed (None)."""
    members = zip_members(zipped)
    if data is None:
        members.pop(name)
    else:
        members[name] = data
    return zip_bytes(members)


def h5_edit(data: bytes, edit: Callable[[h5py.File], None], tmp: Path) -> bytes:
    path = tmp / "edit.h5"
    path.write_bytes(data)
    with h5py.File(path, "r+") as f:
        edit(f)
    out = path.read_bytes()
    path.unlink()
    return out


def _g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _t(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def torch_state_pkl(*, size: tuple[int, ...], stride: tuple[int, ...], key: str = "0", numel: int = 4,
                    pid: bytes | None = None) -> bytes:
    """data.pkl of ``OrderedDict(w=_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()))``."""
    if pid is None:
        pid = _t(_s("storage"), _g("torch", "FloatStorage"), _s(key), _s("cpu"), _i(numel))
    tensor = (_g("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + _i(0) + _t(*map(_i, size))
              + _t(*map(_i, stride)) + b"\x89" + _g("collections", "OrderedDict") + b")R" + b"tR")
    return b"\x80\x02" + _g("collections", "OrderedDict") + b")R(" + _s("encoder.0.conv1.weight") + tensor + b"u."


def torch_zip(pkl: bytes, storages: dict[str, bytes], *, prefix: str = "model", byteorder: bytes = b"little") -> bytes:
    members = {f"{prefix}/data.pkl": pkl, f"{prefix}/byteorder": byteorder}
    members.update({f"{prefix}/data/{k}": v for k, v in storages.items()})
    members[f"{prefix}/version"] = b"3\n"
    return zip_bytes(members)


def torch_pickle_member(obj: Any, *, prefix: str = "model") -> bytes:
    """A torch zip whose data.pkl is an arbitrary (hostile) pickle."""
    return torch_zip(_dumps(obj, 2), {}, prefix=prefix)


# (central-directory offset, local-header offset, struct format) of the fields we lie about
_ZIP_FIELDS = {"size": (24, 22, "<I"), "flags": (8, 6, "<H")}


def patch_entry(zipped: bytes, name: str, field: str, value: int) -> bytes:
    """Rewrite one field a zip declares for ``name``, in its central directory and local header."""
    cd_off, local_off, fmt = _ZIP_FIELDS[field]
    out = bytearray(zipped)
    raw = name.encode()
    cd = out.find(b"PK\x01\x02")
    while cd != -1:
        nlen = struct.unpack_from("<H", out, cd + 28)[0]
        if bytes(out[cd + 46:cd + 46 + nlen]) == raw:
            struct.pack_into(fmt, out, cd + cd_off, value)
            local = struct.unpack_from("<I", out, cd + 42)[0]
            struct.pack_into(fmt, out, local + local_off, value)
            return bytes(out)
        cd = out.find(b"PK\x01\x02", cd + 4)
    raise AssertionError(f"{name} not in central directory")


def raw_entry(name: str, data: bytes, *, mode: int | None = None,
              method: int = zipfile.ZIP_STORED) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = method
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info, data


def zip_with_entries(base: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one case
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in base.items():
                zf.writestr(name, data)
            for info, data in extra:
                zf.writestr(info, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# Base archives (real members, read once)
# ---------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    tmp: Path
    sentinel: Path
    tf: dict[str, bytes]  # tf_N64_gs1, diffraction_to_obj only
    torch: dict[str, bytes]  # torch_N64_gs1 bundle
    ckpt: bytes

    @property
    def cmd(self) -> str:
        return f"touch {self.sentinel}"

    @property
    def argv(self) -> list[str]:
        return ["touch", str(self.sentinel)]

    def write(self, members: dict[str, bytes], name: str = "wts.h5.zip") -> Path:
        path = self.tmp / "case" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(zip_bytes(members))
        return path

    def write_raw(self, data: bytes, name: str = "wts.h5.zip") -> Path:
        path = self.tmp / "case" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path

    def tf_with(self, **repl: bytes | None) -> Path:
        """The TF base with members replaced; short keys ``manifest_dill``, ``params_dill``, ``custom_objects_dill``."""
        members = dict(self.tf)
        for key, data in repl.items():
            name = _SHORT.get(key, key)
            if data is None:
                members.pop(name)
            else:
                members[name] = data
        return self.write(members)

    def torch_with(self, name: str, data: bytes) -> Path:
        return self.write({**self.torch, name: data})

    def keras_with(self, inner: str, data: bytes | None) -> Path:
        return self.tf_with(**{KERAS: with_member(self.tf[KERAS], inner, data)})

    def keras_weights(self) -> bytes:
        return zip_members(self.tf[KERAS])["model.weights.h5"]

    def keras_h5_edit(self, edit: Callable[[h5py.File], None]) -> Path:
        return self.keras_with("model.weights.h5", h5_edit(self.keras_weights(), edit, self.tmp))

    def keras_config_edit(self, edit: Callable[[dict], None]) -> Path:
        config = json.loads(zip_members(self.tf[KERAS])["config.json"])
        edit(config)
        return self.keras_with("config.json", json.dumps(config).encode())

    def ckpt_with(self, inner: str, data: bytes) -> Path:
        return self.write_raw(with_member(self.ckpt, inner, data), "lightning.ckpt")

    def bridge(self, mutate: Callable[[Ctx, dict, dict[str, bytes]], None], *,
               smuggle: dict[str, bytes] | None = None) -> Path:
        """The sample bridge-2 archive with members mutated; checksums recomputed so only the defect remains.

        ``smuggle`` members are added afterwards, unlisted in the manifest.
        """
        sample = write_sample(self.tmp / "sample-src.zip")
        members = zip_members(sample)
        sample.unlink()
        manifest = json.loads(members["manifest.json"])
        mutate(self, manifest, members)
        manifest["members"] = {k: {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()}
                               for k, v in members.items() if k != "manifest.json"}
        members["manifest.json"] = json.dumps(manifest).encode()
        return self.write({**members, **(smuggle or {})})


_SHORT = {"manifest_dill": "manifest.dill", "params_dill": "diffraction_to_obj/params.dill",
          "custom_objects_dill": "diffraction_to_obj/custom_objects.dill"}


@pytest.fixture(scope="module")
def bases() -> dict[str, Any]:
    if not FIX.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIX}")
    tf_all = zip_members(FIX / "tf_N64_gs1" / "wts.h5.zip")
    tf = {k: v for k, v in tf_all.items() if k.startswith("diffraction_to_obj/")}
    tf["manifest.dill"] = _dumps({"models": ["diffraction_to_obj"], "version": "1.0"})
    return {"tf": tf, "torch": zip_members(FIX / "torch_N64_gs1" / "wts.h5.zip"),
            "ckpt": (FIX / "torch_N64_gs1" / "lightning.ckpt").read_bytes()}


@pytest.fixture
def ctx(bases: dict[str, Any], tmp_path: Path) -> Ctx:
    return Ctx(tmp_path, tmp_path / "PWNED", bases["tf"], bases["torch"], bases["ckpt"])


# ---------------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], Path]
    member: str  # the error message must name this member (or tensor)
    error: type[ArchiveError] | tuple[type[ArchiveError], ...] = ArchiveError
    # "read": read_archive raises; "load": only loading tensor values fails; "probe": read_archive raises
    # (it reads the probe from weights.h5) but inspect, which reports bridge-2's probe from params.json's
    # reference without opening weights.h5 (issue 16, docs/security.md §7b), succeeds
    stage: str = "read"
    may_hang: bool = False  # read first in a subprocess with a timeout (a regression must fail, not hang)


def _lambda_layer(config: dict) -> None:
    code = base64.b64encode(marshal.dumps(compile("__import__('os').system('id')", "<x>", "eval"))).decode()
    config["config"]["layers"].append({
        "module": "keras.layers", "class_name": "Lambda", "name": "evil",
        "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {"code": code}}},
        "inbound_nodes": [],
    })


def _module_import_layer(config: dict) -> None:
    config["config"]["layers"].append({
        "module": "os", "class_name": "system", "name": "evil", "config": {"name": "evil"}, "inbound_nodes": [],
    })


def _zero_free_space(data: bytes) -> bytes:
    """Set the size of the global heap's free-space object to 0: libhdf5 then loops forever on any
    variable-length read (Keras's layer ``name`` attributes); found by scripts/fuzz.py."""
    pos = data.find(b"GCOL")
    end = pos + int.from_bytes(data[pos + 8:pos + 16], "little")
    p = pos + 16
    while p + 16 <= end:
        index, size = int.from_bytes(data[p:p + 2], "little"), int.from_bytes(data[p + 8:p + 16], "little")
        if index == 0:
            return data[:p + 8] + bytes(8) + data[p + 16:]
        p += 16 + -(-size // 8) * 8
    raise AssertionError("no free-space object in the global heap")


def _nan_kernel(f: h5py.File) -> None:
    f[TF_KERNEL][0, 0, 0, 5] = np.nan


def _replace_kernel(make: Callable[[h5py.File, str, tuple[int, ...]], None]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        shape = f[TF_KERNEL].shape
        del f[TF_KERNEL]
        make(f, TF_KERNEL, shape)
    return edit


def _inf_in_torch(ctx: Ctx) -> Path:
    inner = zip_members(ctx.torch["diffraction_to_obj/model.pth"])
    inner["model/data/0"] = struct.pack("<f", float("inf")) + inner["model/data/0"][4:]
    return ctx.torch_with("diffraction_to_obj/model.pth", zip_bytes(inner))


def _bridge_dtype_lie(ctx: Ctx, manifest: dict, members: dict[str, bytes]) -> None:
    def edit(f: h5py.File) -> None:
        name = "tensors/encoder.0.conv1.weight"
        data = f[name][()].astype(np.float64)
        del f[name]
        f[name] = data
    members["diffraction_to_obj/weights.h5"] = h5_edit(members["diffraction_to_obj/weights.h5"], edit, ctx.tmp)


def _bridge_link(ctx: Ctx, manifest: dict, members: dict[str, bytes]) -> None:
    def edit(f: h5py.File) -> None:
        del f["tensors/encoder.0.conv1.weight"]
        f["tensors/encoder.0.conv1.weight"] = h5py.ExternalLink("/etc/passwd", "/")
    members["diffraction_to_obj/weights.h5"] = h5_edit(members["diffraction_to_obj/weights.h5"], edit, ctx.tmp)


def _bridge_probe_dtype(ctx: Ctx, manifest: dict, members: dict[str, bytes]) -> None:
    doc = json.loads(members["params.json"])
    doc["params"]["probe"]["$array"]["dtype"] = "complex128"
    members["params.json"] = json.dumps(doc).encode()


def _bridge_truncated(ctx: Ctx, manifest: dict, members: dict[str, bytes]) -> None:
    data = members["diffraction_to_obj/weights.h5"]
    members["diffraction_to_obj/weights.h5"] = data[: len(data) // 3]


CASES: list[Case] = [
    # -- code execution attempts in every pickled member ------------------------------------------
    Case("tf_manifest_os_system", lambda c: c.tf_with(manifest_dill=_dumps(_os_system(c.cmd))), "manifest.dill", FormatError),
    Case("tf_manifest_eval", lambda c: c.tf_with(manifest_dill=_dumps(_eval(c.cmd))), "manifest.dill", FormatError),
    Case("tf_manifest_getattr_chain", lambda c: c.tf_with(manifest_dill=_dumps(_getattr_chain(c.cmd))), "manifest.dill", FormatError),
    Case("tf_manifest_popen_protocol0", lambda c: c.tf_with(manifest_dill=_dumps(_popen(c.argv), 0)), "manifest.dill", FormatError),
    Case("tf_manifest_inst_opcode", lambda c: c.tf_with(manifest_dill=b"(S'" + c.cmd.encode() + b"'\nios\nsystem\n."),
         "manifest.dill", FormatError),
    Case("tf_params_os_system", lambda c: c.tf_with(params_dill=_dumps(_os_system(c.cmd))),
         "diffraction_to_obj/params.dill", FormatError),
    Case("tf_params_field_eval", lambda c: c.tf_with(params_dill=_dumps(
        {"N": _eval(c.cmd), "gridsize": 1, "intensity_scale": 1.0})), "diffraction_to_obj/params.dill", PickleDecodeError),
    Case("tf_custom_objects_os_system", lambda c: c.tf_with(custom_objects_dill=_dumps(_os_system(c.cmd))),
         "diffraction_to_obj/custom_objects.dill", ArchiveError),
    Case("tf_custom_objects_entry_popen", lambda c: c.tf_with(custom_objects_dill=_dumps(
        {"ProbeIllumination": _popen(c.argv)})), "diffraction_to_obj/custom_objects.dill", ArchiveError),
    Case("torch_manifest_getattr_chain", lambda c: c.torch_with("manifest.dill", _dumps(_getattr_chain(c.cmd))),
         "manifest.dill", FormatError),
    Case("torch_params_os_system", lambda c: c.torch_with("diffraction_to_obj/params.dill", _dumps(_os_system(c.cmd))),
         "diffraction_to_obj/params.dill", FormatError),
    Case("torch_model_pth_os_system", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_pickle_member(_os_system(c.cmd))),
         "diffraction_to_obj/model.pth", FormatError),
    Case("torch_model_pth_getattr_chain", lambda c: c.torch_with("diffraction_to_obj/model.pth",
                                                                 torch_pickle_member(_getattr_chain(c.cmd))),
         "diffraction_to_obj/model.pth", FormatError),
    Case("torch_state_dict_value_eval", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_pickle_member(
        {"encoder.0.conv1.weight": _eval(c.cmd)})), "diffraction_to_obj/model.pth", FormatError),
    Case("torch_sentinel_popen", lambda c: c.torch_with("autoencoder/model.pth", torch_pickle_member({"_sentinel": _popen(c.argv)})),
         "autoencoder/model.pth", ArchiveError),
    Case("torch_metadata_popen", lambda c: c.torch_with("torch_scaling_metadata.pt", torch_pickle_member(_popen(c.argv), prefix="archive")),
         "torch_scaling_metadata.pt", FormatError),
    Case("torch_metadata_model_config_eval", lambda c: c.torch_with("torch_scaling_metadata.pt", torch_pickle_member(
        {"model_config": _eval(c.cmd), "data_config": {}}, prefix="archive")), "torch_scaling_metadata.pt", FormatError),
    Case("ckpt_data_pkl_os_system", lambda c: c.ckpt_with("lightning/data.pkl", _dumps(_os_system(c.cmd), 2)),
         "lightning.ckpt", FormatError),
    Case("ckpt_hyper_parameters_eval", lambda c: c.ckpt_with("lightning/data.pkl", _dumps(
        {"state_dict": {}, "hyper_parameters": _eval(c.cmd)}, 2)), "lightning.ckpt", FormatError),
    # -- pickle resource attacks ------------------------------------------------------------------
    Case("pickle_deep_nesting", lambda c: c.tf_with(manifest_dill=b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."),
         "manifest.dill", ArchiveLimitError),
    Case("pickle_deep_dict_in_params", lambda c: c.torch_with("diffraction_to_obj/params.dill",
                                                              b"\x80\x02" + b"}(X\x01\x00\x00\x00a" * 5_000 + b"N" + b"u" * 5_000 + b"."),
         "diffraction_to_obj/params.dill", ArchiveLimitError),
    Case("pickle_self_reference", lambda c: c.tf_with(manifest_dill=b"\x80\x02]q\x00h\x00a."), "manifest.dill", PickleDecodeError),
    # -- zip container attacks --------------------------------------------------------------------
    Case("zip_bomb_nested_in_model_keras", lambda c: c.tf_with(**{KERAS: zip_bytes(
        {**zip_members(c.tf[KERAS]), "model.weights.h5": bytes(64 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)}),
        "model.keras:model.weights.h5", ArchiveLimitError),
    Case("zip_bomb_outer_member", lambda c: c.write_raw(zip_bytes({**c.torch, "diffraction_to_obj/params.dill": bytes(32 << 20)},
                                                                  zipfile.ZIP_DEFLATED)),
         "diffraction_to_obj/params.dill", ArchiveLimitError),
    Case("zip_slip_nested_in_model_keras", lambda c: c.keras_with("../../../tmp/evil.py", b"import os"),
         "model.keras:../../../tmp/evil.py", UnsafeArchiveError),
    Case("zip_slip_outer", lambda c: c.write({**c.torch, "../evil.dill": b"x"}), "../evil.dill", UnsafeArchiveError),
    Case("zip_absolute_path", lambda c: c.write({**c.torch, "/tmp/evil.dill": b"x"}), "/tmp/evil.dill", UnsafeArchiveError),
    Case("zip_backslash_path", lambda c: c.write({**c.torch, "..\\evil.dill": b"x"}), "evil.dill", UnsafeArchiveError),
    Case("zip_symlink_outer", lambda c: c.write_raw(zip_with_entries(c.torch, [raw_entry(
        "diffraction_to_obj/link", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)])), "diffraction_to_obj/link", UnsafeArchiveError),
    Case("zip_symlink_nested_in_model_keras", lambda c: c.tf_with(**{KERAS: zip_with_entries(
        zip_members(c.tf[KERAS]), [raw_entry("model.weights.h5.link", b"/etc/shadow", mode=stat.S_IFLNK | 0o777)])}),
        "model.keras:model.weights.h5.link", UnsafeArchiveError),
    Case("zip_declared_size_too_small", lambda c: c.write_raw(patch_entry(
        zip_bytes(c.torch, zipfile.ZIP_DEFLATED), "diffraction_to_obj/params.dill", "size", 100)),
        "diffraction_to_obj/params.dill", CorruptArchiveError),
    Case("zip_declared_size_huge", lambda c: c.write_raw(patch_entry(
        zip_bytes(c.torch), "torch_scaling_metadata.pt", "size", 0xFFFFFFF0)), "torch_scaling_metadata.pt", ArchiveLimitError),
    Case("zip_duplicate_member", lambda c: c.write_raw(zip_with_entries(c.torch, [raw_entry("manifest.dill", _dumps(
        {"models": ["evil"], "version": "2.0-pytorch"}))])), "manifest.dill", UnsafeArchiveError),
    Case("zip_encrypted_member", lambda c: c.write_raw(patch_entry(zip_bytes({**c.torch, "secret.bin": b"x"}), "secret.bin",
                                                                   "flags", 0x1)),
         "secret.bin", UnsafeArchiveError),
    Case("zip_lzma_member", lambda c: c.write_raw(zip_with_entries(c.torch, [raw_entry("odd.bin", b"x" * 100,
                                                                                       method=zipfile.ZIP_LZMA)])),
         "odd.bin", UnsafeArchiveError),
    Case("zip_too_many_members", lambda c: c.write({**c.torch, **{f"junk/{i}": b"" for i in range(4100)}}),
         "wts.h5.zip", ArchiveLimitError),
    Case("not_a_zip", lambda c: c.write_raw(b"\x89HDF\r\n\x1a\n" + bytes(200)), "wts.h5.zip", CorruptArchiveError),
    Case("truncated_zip", lambda c: c.write_raw(zip_bytes(c.torch)[:300_000]), "wts.h5.zip", CorruptArchiveError),
    Case("empty_file", lambda c: c.write_raw(b""), "wts.h5.zip", CorruptArchiveError),
    # -- torch storages ---------------------------------------------------------------------------
    Case("torch_storage_smaller_than_tensor", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_zip(
        torch_state_pkl(size=(32, 1, 3, 3), stride=(9, 9, 3, 1), numel=4), {"0": bytes(16)})),
        "diffraction_to_obj/model.pth", PickleDecodeError),
    Case("torch_persistent_id_names_no_storage", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_zip(
        torch_state_pkl(size=(2, 2), stride=(2, 1), key="999"), {"0": bytes(16)})), "diffraction_to_obj/model.pth",
        PickleDecodeError),
    Case("torch_persistent_id_not_a_storage", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_zip(
        torch_state_pkl(size=(2, 2), stride=(2, 1), pid=_s("/etc/passwd")), {})), "diffraction_to_obj/model.pth",
        PickleDecodeError),
    Case("torch_storage_size_lie", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_zip(
        torch_state_pkl(size=(2, 2), stride=(2, 1), numel=1_000_000), {"0": bytes(16)})), "diffraction_to_obj/model.pth",
        PickleDecodeError),
    Case("torch_big_endian", lambda c: c.torch_with("diffraction_to_obj/model.pth", torch_zip(
        torch_state_pkl(size=(2, 2), stride=(2, 1)), {"0": bytes(16)}, byteorder=b"big")), "diffraction_to_obj/model.pth",
        UnsupportedError),
    # -- era confusion ----------------------------------------------------------------------------
    Case("era_torch_manifest_with_keras_payload", lambda c: c.tf_with(manifest_dill=_dumps(
        {"models": ["diffraction_to_obj"], "version": "2.0-pytorch"})), "diffraction_to_obj/model.pth", FormatError),
    Case("era_tf_manifest_with_torch_payload", lambda c: c.torch_with("manifest.dill", _dumps(
        {"models": ["diffraction_to_obj"], "version": "1.0"})), "diffraction_to_obj/model.keras", FormatError),
    Case("era_keras_zip_named_model_pth", lambda c: c.torch_with("diffraction_to_obj/model.pth", c.tf[KERAS]),
         "diffraction_to_obj/model.pth", FormatError),
    Case("era_unknown_manifest_version", lambda c: c.tf_with(manifest_dill=_dumps({"models": ["diffraction_to_obj"], "version": "9.9"})),
         "manifest.dill", UnsupportedError),
    Case("manifest_model_name_traversal", lambda c: c.tf_with(manifest_dill=_dumps({"models": ["../../etc"], "version": "1.0"})),
         "manifest.dill", FormatError),
    # -- Keras config: code and imports -----------------------------------------------------------
    Case("keras_lambda_bytecode", lambda c: c.keras_config_edit(_lambda_layer), "config.json", UnsafeArchiveError),
    Case("keras_module_import", lambda c: c.keras_config_edit(_module_import_layer), "config.json", UnsafeArchiveError),
    # -- HDF5 -------------------------------------------------------------------------------------
    Case("hdf5_global_heap_infinite_loop", lambda c: c.keras_with("model.weights.h5", _zero_free_space(c.keras_weights())),
         "model.keras:model.weights.h5", CorruptArchiveError, may_hang=True),
    Case("hdf5_truncated", lambda c: c.keras_with("model.weights.h5", c.keras_weights()[:100_000]),
         "model.keras:model.weights.h5", CorruptArchiveError),
    Case("hdf5_external_link", lambda c: c.keras_h5_edit(_replace_kernel(
        lambda f, p, s: f.__setitem__(p, h5py.ExternalLink("/etc/passwd", "/")))), "model.weights.h5", UnsafeArchiveError),
    Case("hdf5_soft_link", lambda c: c.keras_h5_edit(_replace_kernel(
        lambda f, p, s: f.__setitem__(p, h5py.SoftLink("/layers/conv2d_1/vars/0")))), "model.weights.h5", UnsafeArchiveError),
    Case("hdf5_virtual_dataset", lambda c: c.keras_h5_edit(_replace_kernel(_vds)), "model.weights.h5", UnsafeArchiveError),
    Case("hdf5_external_storage", lambda c: c.keras_h5_edit(_replace_kernel(
        lambda f, p, s: f.create_dataset(p, shape=s, dtype="f4", external=[("/etc/passwd", 0, 4 * int(np.prod(s)))]))),
        "model.weights.h5", UnsafeArchiveError),
    Case("hdf5_string_dtype", lambda c: c.keras_h5_edit(_replace_kernel(
        lambda f, p, s: f.create_dataset(p, data=np.array([b"evil"] * int(np.prod(s))).reshape(s)))),
        "model.weights.h5", FormatError),
    # -- values and lazily read data ----------------------------------------------------------------
    Case("nan_weights_tf", lambda c: c.keras_h5_edit(_nan_kernel), "encoder.0.conv1.weight", stage="load"),
    Case("inf_weights_torch", _inf_in_torch, "non-finite", stage="load"),
    # -- bridge-2 ---------------------------------------------------------------------------------
    Case("bridge_dtype_lie", lambda c: c.bridge(_bridge_dtype_lie), "encoder.0.conv1.weight", stage="load"),
    Case("bridge_external_link", lambda c: c.bridge(_bridge_link), "weights.h5", stage="load"),
    Case("bridge_params_dtype_lie", lambda c: c.bridge(_bridge_probe_dtype), "params.json", FormatError, stage="probe"),
    Case("bridge_truncated_weights", lambda c: c.bridge(_bridge_truncated), "diffraction_to_obj/weights.h5", CorruptArchiveError,
         stage="probe"),
    Case("bridge_smuggled_member", lambda c: c.bridge(lambda *_: None, smuggle={"evil.dill": _dumps(_os_system(c.cmd))}),
         "evil.dill", FormatError),
    Case("bridge_nan_literal_in_manifest", lambda c: c.write({**zip_members(write_sample(c.tmp / "s.zip")),
                                                              "manifest.json": b'{"format": "ptycho-bridge", "x": NaN}'}),
         "manifest.json", FormatError),
    Case("bridge_newer_major_version", lambda c: c.bridge(lambda _, m, __: m.__setitem__("format_version", "3.0.0")),
         "manifest.json", UnsupportedError),
]


def _vds(f: h5py.File, path: str, shape: tuple[int, ...]) -> None:
    layout = h5py.VirtualLayout(shape=shape, dtype="f4")
    layout[...] = h5py.VirtualSource("/etc/passwd", "data", shape=shape)
    f.create_virtual_dataset(path, layout, fillvalue=0)


def test_corpus_size() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_archive(case: Case, ctx: Ctx) -> None:
    path = case.build(ctx)
    before = _listing(ctx.tmp)
    if case.may_hang:
        probe = f"from ptycho_bridge import read_archive\ntry:\n read_archive(r'{path}')\nexcept Exception: pass"
        subprocess.run([sys.executable, "-c", probe], timeout=120, check=True)

    if case.stage in ("read", "probe"):
        with pytest.raises(case.error) as info:
            read_archive(path)
        assert case.member in str(info.value), str(info.value)
    else:
        read_archive(path)  # metadata is fine; the values are not (validate loads them below)

    code, out, err = _cli("inspect", str(path))
    if case.stage == "read":
        assert code == 1 and case.member in err and err.startswith("error: ") and err.count("\n") == 1, err
    else:
        assert code == 0, err  # inspect reads metadata only (docs/security.md)

    code, out, err = _cli("validate", str(path), "--json")
    assert code == 1, out
    report = json.loads(out)["archives"][0]
    assert not report["valid"] and case.member in " ".join(report["errors"]), report["errors"]

    out_dir = ctx.tmp / "migrated"
    code, out, err = _cli("migrate", str(path), "-o", str(out_dir))
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    if not case.id.startswith("bridge"):  # a bridge-2 source is refused before its content matters
        assert case.member in err, err

    assert not out_dir.exists()
    assert _listing(ctx.tmp) == before  # nothing written anywhere
    assert not ctx.sentinel.exists()  # nothing executed


def test_payloads_are_real_attacks(ctx: Ctx) -> None:
    """The corpus pickles really name the dangerous callables (checked by our inert reader, never run)."""
    from ptycho_bridge.io.safepickle import decode, find_opaque, load_inert

    seen = set()
    for obj in (_os_system(ctx.cmd), _eval(ctx.cmd), _getattr_chain(ctx.cmd), _popen(ctx.argv)):
        data = _dumps(obj)
        seen |= set(find_opaque(decode(load_inert(data, member="x"), member="x")))
    assert {"posix.system", "builtins.eval", "builtins.getattr", "builtins.__import__", "subprocess.Popen"} <= seen
    assert not ctx.sentinel.exists()


def test_security_doc_matches_the_code() -> None:
    """docs/security.md lists every limit with its default, and the corpus size, as the code has them."""
    import dataclasses
    import re

    from ptycho_bridge.io.safepickle import PickleLimits
    from ptycho_bridge.io.safezip import Limits

    text = (REPO / "docs" / "security.md").read_text(encoding="utf-8")

    def shown(value: float) -> str:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
            if value >= size and value % size == 0:
                return f"{int(value) // size} {unit}"
        value = int(value) if float(value).is_integer() else value
        return f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)

    for limits in (Limits(), PickleLimits()):
        for f in dataclasses.fields(limits):
            row = re.search(rf"^\| `{f.name}` \| ([^|]+)\|", text, re.MULTILINE)
            assert row, f"{f.name} missing from docs/security.md"
            assert row.group(1).strip().startswith(shown(getattr(limits, f.name))), (f.name, row.group(1))
    assert f"{len(CASES)} cases" in text


# ---------------------------------------------------------------------------------------------------
# Issue 12 (hardening, round 2): linear-time bounds, memory caps, safe output, Keras callables.
# Each test names the finding it guards; inputs that hung or blew up memory before the fix are read in
# a child process with a timeout and an address-space cap, so a regression fails instead of hanging.
# ---------------------------------------------------------------------------------------------------
_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from ptycho_bridge import read_archive
try:
    read_archive(sys.argv[1]){load}
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
else:
    print("accepted")
"""


def _read_in_child(path: Path, *, timeout: float = 30, cap: int = 1536 << 20, load: bool = False) -> str:
    """``read_archive(path)`` (and every tensor loaded, with ``load``) in a child: its one-line outcome."""
    code = _CHILD.format(cap=cap, load=".load_all()" if load else "")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def _cli_one_error(path: Path, verb: str = "inspect") -> str:
    code, out, err = _cli(verb, str(path))
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    return err


# -- finding 3: CPU --------------------------------------------------------------------------------
def test_issue12_pickle_rehashing_a_memoised_key_is_bounded(ctx: Ctx) -> None:
    """820 KB: a 9,999-item tuple key memoised once, then ``BINGET 0, NONE, SETITEM`` 270k times (~330 s before)."""
    key = b"\x80\x02(" + b"K\x01" * 9_999 + b"tq\x000"
    path = ctx.tf_with(manifest_dill=key + b"}" + b"h\x00Ns" * 270_000 + b".")
    outcome = _read_in_child(path, timeout=30)
    assert outcome.startswith("ArchiveLimitError") and "manifest.dill" in outcome and "hashes more than" in outcome, outcome
    assert "hashes more than" in _cli_one_error(path)


def test_issue12_pickle_hash_colliding_keys_refused(ctx: Ctx) -> None:
    """``complex(-1000003*i, i)`` all hash to 0: building the dict was O(n²)."""
    # written by hand: even building this dict in the test would be O(n²)
    keys = b"".join(b"h\x01G" + struct.pack(">d", -1000003 * i) + b"G" + struct.pack(">d", i) + b"\x86RK\x00"
                    for i in range(1, 30_000))
    stream = (b"\x80\x02}(" + _s("models") + b"]" + _s("diffraction_to_obj") + b"a" + _s("version") + _s("1.0")
              + _s("x") + b"cbuiltins\ncomplex\nq\x010}(" + keys + b"uu.")
    path = ctx.tf_with(manifest_dill=stream)
    outcome = _read_in_child(path, timeout=30)
    assert outcome.startswith("ArchiveLimitError") and "share one hash value" in outcome, outcome


def test_issue12_global_heap_scan_is_linear(ctx: Ctx) -> None:
    """1 MiB of nested GCOL candidates: > 60 s before (one walk restarted per signature)."""
    from ptycho_bridge.io.h5 import check_global_heaps

    with pytest.raises(CorruptArchiveError, match="collections overlap"):
        check_global_heaps(nested_gcol(4096), member="x")
    path = ctx.keras_with("model.weights.h5", nested_gcol(1 << 20))
    outcome = _read_in_child(path, timeout=20)
    assert outcome.startswith("CorruptArchiveError") and "model.weights.h5" in outcome, outcome


def _conv_chain(n: int) -> Callable[[dict], None]:
    """Rewire the amp head through a chain of ``n`` convs (each one's ancestor set was cached: O(n²))."""
    def edit(config: dict) -> None:
        layers = config["config"]["layers"]
        conv = next(layer for layer in layers if layer["class_name"] == "Conv2D")
        amp = next(layer for layer in layers if layer["name"] == "amp")
        prev = amp["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0]
        for k in range(n):
            name = f"chain_{k}"
            tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None], "dtype": "float32",
                                                                  "keras_history": [prev, 0, 0]}}
            layers.append({**conv, "name": name, "config": {**conv["config"], "name": name},
                           "inbound_nodes": [{"args": [tensor], "kwargs": {}}]})
            prev = name
        amp["inbound_nodes"][0]["args"].append({"class_name": "__keras_tensor__", "config": {
            "shape": [None], "dtype": "float32", "keras_history": [prev, 0, 0]}})
    return edit


def test_issue12_keras_graph_long_conv_chain(ctx: Ctx) -> None:
    """A 22k-conv chain: 3.7 GB RSS and 25-47 s before; now refused by the layer limit, at once."""
    path = ctx.keras_config_edit(_conv_chain(22_000))
    outcome = _read_in_child(path, timeout=30, cap=1536 << 20)
    assert outcome.startswith("SpecError") and "layers, limit is 4096" in outcome and "config.json" in outcome, outcome


def test_issue12_keras_graph_is_linear_below_the_limit() -> None:
    """Below the limit, graph analysis is O(nodes + edges): 4,000 chained convs analyse in well under a second."""
    import time

    from converters.tensorflow.keras_graph import analyse_config
    from ptycho_bridge.errors import SpecError

    if not FIX.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIX}")
    keras = zip_members(FIX / "tf_N64_gs1" / "wts.h5.zip")[KERAS]
    config = json.loads(zip_members(keras)["config.json"])
    _conv_chain(4_000)(config)
    start = time.perf_counter()
    try:
        analyse_config(config, member="config.json")
    except SpecError:
        pass  # whether the chain is accepted as decoder pairs is the spec's business; the cost is ours
    assert time.perf_counter() - start < 1.0  # ~0.06 s; ~3-4 s before (an ancestor set cached per conv)


# -- finding 4: memory -----------------------------------------------------------------------------
def _stride0_pkl() -> bytes:
    """One float32 storage element viewed as a 25000 × 25000 tensor (2.5 GB) with stride 0."""
    return torch_state_pkl(size=(25_000, 25_000), stride=(0, 0), numel=1)


def test_issue12_torch_stride0_tensor_not_materialised(ctx: Ctx) -> None:
    path = ctx.torch_with("diffraction_to_obj/model.pth", torch_zip(_stride0_pkl(), {"0": bytes(4)}))
    outcome = _read_in_child(path, load=True)
    assert outcome.startswith("ArchiveLimitError") and "broadcast view" in outcome, outcome
    assert "diffraction_to_obj/model.pth" in outcome


def test_issue12_ckpt_stride0_tensor_fails_validate(ctx: Ctx) -> None:
    """The ``.ckpt`` form of the same tensor used to pass ``validate`` (after 2.4 GB of RSS)."""
    members = zip_members(ctx.ckpt)
    prefix = next(n for n in members if n.endswith("/data.pkl")).rsplit("/", 1)[0]
    pkl = _stride0_pkl().replace(_s("encoder.0.conv1.weight"), _s("model.encoder.0.conv1.weight"))
    state = b"\x80\x02}(" + _s("state_dict") + pkl[2:-1] + b"u."
    members[f"{prefix}/data.pkl"] = state
    members[f"{prefix}/data/0"] = bytes(4)
    path = ctx.write_raw(zip_bytes(members), "lightning.ckpt")
    outcome = _read_in_child(path, load=True)
    assert "broadcast view" in outcome, outcome


def _bridge_unwritten_probe(side: int) -> Callable[[Ctx, dict, dict[str, bytes]], None]:
    def mutate(ctx: Ctx, manifest: dict, members: dict[str, bytes]) -> None:
        doc = json.loads(members["params.json"])
        ref = doc["params"]["probe"]["$array"]
        ref.update(shape=[side, side], dtype="complex64")  # the declared shape agrees: only the bytes are missing
        members["params.json"] = json.dumps(doc).encode()

        def edit(f: h5py.File) -> None:
            del f[ref["dataset"]]
            f.create_dataset(ref["dataset"], shape=(side, side), dtype="c8", chunks=(1024, 1024))

        members[ref["member"]] = h5_edit(members[ref["member"]], edit, ctx.tmp)
    return mutate


# bridge-2 refuses a chunked dataset before its size is even looked at (the layout rule of the fast path);
# either refusal comes before a byte of the dataset is read, which is what this test is about
CHUNKED = "FormatError: .*/params/probe is chunked or filtered"


@pytest.mark.parametrize(("side", "expected"), [(17678, f"ArchiveLimitError: .*declares 2500093472 bytes.*limit is|{CHUNKED}"),
                                                (8000, f"CorruptArchiveError: .*stores 0: unwritten or missing data|{CHUNKED}")])
def test_issue12_hdf5_dataset_bounded_before_reading(ctx: Ctx, side: int, expected: str) -> None:
    """A bridge-2 probe declared 17678² (chunked, no chunk written) was read fully (2.5 GB) before any check."""
    import re

    path = ctx.bridge(_bridge_unwritten_probe(side))
    outcome = _read_in_child(path)
    assert re.match(expected, outcome) and "weights.h5" in outcome and "/params/probe" in outcome, outcome


def _patch_compressed_size(data: bytes, name: str, value: int) -> bytes:
    buf = bytearray(data)
    raw = name.encode()
    local = buf.index(b"PK\x03\x04" + bytes(0))
    while buf[local + 30:local + 30 + len(raw)] != raw:
        local = buf.index(b"PK\x03\x04", local + 4)
    central = buf.index(b"PK\x01\x02")
    while buf[central + 46:central + 46 + len(raw)] != raw:
        central = buf.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", buf, local + 18, value)
    struct.pack_into("<I", buf, central + 20, value)
    return bytes(buf)


def test_issue12_zip_ratio_checked_while_inflating(tmp_path: Path) -> None:
    """The central directory claims 100:1; the deflate stream really is ~1000:1."""
    from ptycho_bridge.io.safezip import SafeZip

    data = zip_bytes({"pad": bytes(300_000), "bomb": bytes(48 << 20)}, zipfile.ZIP_DEFLATED)
    lie = _patch_compressed_size(data, "bomb", (48 << 20) // 100)
    with SafeZip(lie, label="b.zip") as zf:  # the claim passes the scan
        with pytest.raises(ArchiveLimitError, match=r"b\.zip:bomb: compression ratio above 200:1 while inflating"):
            zf.read("bomb")


def test_issue12_zip_overlapping_entries_refused() -> None:
    """Members whose data overlaps the next one (one kernel inflated once per member)."""
    from ptycho_bridge.io.safezip import SafeZip

    data = zip_bytes({"a": b"x" * 1000, "b": b"y" * 1000}, zipfile.ZIP_STORED)
    lie = _patch_compressed_size(data, "a", 5000)
    with pytest.raises(UnsafeArchiveError, match="a: member data overlaps the next member"):
        SafeZip(lie, label="o.zip")


# -- finding 6: terminal injection -----------------------------------------------------------------
SPOOF = "x\nok: archive validated\x1b]0;pwned\x07"


def test_issue12_archive_strings_escaped_on_every_output(ctx: Ctx) -> None:
    from ptycho_bridge.cli.util import plain

    assert plain(SPOOF) == "x\\nok: archive validated\\x1b]0;pwned\\x07"
    assert plain("\u2028\ud800é") == "\\u2028\\ud800é"
    path = ctx.tf_with(manifest_dill=_dumps({"models": [SPOOF], "version": "1.0"}))
    for verb in ("inspect", "validate", "migrate"):
        args = ("-o", str(ctx.tmp / "out")) if verb == "migrate" else ()
        code, out, err = _cli(verb, str(path), *args)
        assert code == 1 and err.count("\n") == 1 and err.startswith("error: "), (verb, err)
        for stream in (out, err):
            assert "\x1b" not in stream and "\x07" not in stream and "\nok:" not in stream, (verb, stream)
    code, out, err = _cli("validate", str(path), "--json")
    assert "\x1b" not in out and SPOOF not in json.loads(out)["archives"][0]["errors"][0][:0] + out


# -- finding 8: Keras callables --------------------------------------------------------------------
def _get_file_layer(config: dict) -> None:
    config["config"]["layers"].append({
        "module": "keras.utils", "class_name": "get_file", "name": "fetch",
        "config": {"fname": "x", "origin": "https://example.invalid/x"}, "inbound_nodes": []})


def _get_file_function(config: dict) -> None:
    layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Conv2D")
    layer["config"]["activation"] = {"module": "keras.utils", "class_name": "function", "config": "get_file",
                                     "registered_name": "get_file"}


@pytest.mark.parametrize("edit", [_get_file_layer, _get_file_function], ids=["as_object", "as_function"])
def test_issue12_keras_utils_get_file_refused(ctx: Ctx, edit: Callable[[dict], None]) -> None:
    path = ctx.keras_config_edit(edit)
    with pytest.raises(UnsafeArchiveError, match="keras.utils.(get_file|function)") as info:
        read_archive(path)
    assert "config.json" in str(info.value)
    code, out, _ = _cli("validate", str(path), "--json")
    assert code == 1 and "keras.utils" in " ".join(json.loads(out)["archives"][0]["errors"])
    code, _, err = _cli("migrate", str(path), "-o", str(ctx.tmp / "out"))
    assert code == 1 and "keras.utils" in err and not (ctx.tmp / "out").exists()


# -- finding 5: typed decoding (no traceback from a value of the wrong type) -----------------------
def _tf_params_with(ctx: Ctx, **changes: Any) -> Path:
    from ptycho_bridge.io.safepickle import decode, load_inert

    raw = ctx.tf["diffraction_to_obj/params.dill"]
    params = decode(load_inert(raw, member="p"), member="p")
    params.update(changes)
    return ctx.tf_with(params_dill=_dumps(params, 2))


def _torch_config_with(ctx: Ctx, **model_config: Any) -> Path:
    from ptycho_bridge.io.safepickle import decode, load_inert

    members = zip_members(ctx.torch["torch_scaling_metadata.pt"])
    pkl_name = next(n for n in members if n.endswith("data.pkl"))
    meta = decode(load_inert(members[pkl_name], member="m"), member="m")
    meta["model_config"] = {**meta["model_config"], **model_config}
    members[pkl_name] = _dumps(meta, 2)
    return ctx.torch_with("torch_scaling_metadata.pt", zip_bytes(members))


def _ckpt_with_item(ctx: Ctx, key: str, value_ops: bytes) -> Path:
    """The Lightning checkpoint with ``data[key]`` replaced: one SETITEM spliced before the final STOP."""
    members = zip_members(ctx.ckpt)
    name = next(n for n in members if n.endswith("/data.pkl"))
    pkl = members[name]
    members[name] = pkl[:-1] + _s(key) + value_ops + b"s."
    return ctx.write_raw(zip_bytes(members), "lightning.ckpt")


def _bridge_json(edit: Callable[[dict, dict], None], *, raw: Callable[[bytes], bytes] | None = None):
    def mutate(ctx: Ctx, manifest: dict, members: dict[str, bytes]) -> None:
        params = json.loads(members["params.json"])
        edit(manifest, params)
        members["params.json"] = json.dumps(params).encode()
    return mutate


def _bridge_raw_manifest(ctx: Ctx, replace: Callable[[bytes], bytes]) -> Path:
    members = zip_members(ctx.bridge(lambda *_: None))
    members["manifest.json"] = replace(members["manifest.json"])
    return ctx.write(members)


def _first_tensor(manifest: dict) -> dict:
    return next(iter(manifest["models"]["diffraction_to_obj"]["tensors"].values()))


TYPED = [
    ("json_int_over_4300_digits", lambda c: _bridge_raw_manifest(c, lambda b: b.replace(b'"intensity_scale": ', b'"x": ' + b"9" * 5000 + b', "intensity_scale": ', 1)),
     "manifest.json", "JSON integer of 5000 digits"),
    ("json_float_overflow_intensity_scale", lambda c: _bridge_raw_manifest(c, lambda b: re_sub(rb'"intensity_scale": [0-9.e+]+', b'"intensity_scale": 1e400', b)),
     "manifest.json", "overflows to infinity"),
    ("bridge_float_valued_shape", lambda c: c.bridge(lambda _, m, __: _first_tensor(m).__setitem__("shape", [32.0, 1.0, 3.0, 3.0])),
     "manifest.json", "shape"),
    ("bridge_float_valued_N", lambda c: c.bridge(lambda _, m, __: m["models"]["diffraction_to_obj"]["network"].__setitem__("N", 64.0)),
     "manifest.json", "N"),
    ("bridge_model_name_trailing_newline", lambda c: c.bridge(lambda _, m, __: m["models"].__setitem__(
        "diffraction_to_obj\n", m["models"].pop("diffraction_to_obj"))), "manifest.json", "control character"),
    ("bridge_version_trailing_newline", lambda c: c.bridge(lambda _, m, __: m.__setitem__("format_version", "2.0.0\n")),
     "manifest.json", "control character"),
    ("bridge_lone_surrogate_tool", lambda c: _bridge_raw_manifest(c, lambda b: b.replace(b'"tool": "ptycho-bridge"', b'"tool": "\\ud800"')),
     "manifest.json", "surrogate"),
    ("bridge_params_intensity_scale_inf", lambda c: c.bridge(_bridge_json(lambda m, p: p["params"].__setitem__(
        "intensity_scale", {"$float": "inf"}))), "params.json", "intensity_scale"),
    ("tf_version_ndarray", lambda c: _tf_params_with(c, _version=np.array([1.0, 2.0])), "params.dill", "_version"),
    ("tf_intensity_scale_huge_int", lambda c: _tf_params_with(c, intensity_scale=10**400), "params.dill", "intensity_scale"),
    ("tf_N_huge_int", lambda c: _tf_params_with(c, N=10**5000), "params.dill", "integer of"),
    ("tf_offset_str", lambda c: _tf_params_with(c, offset="4"), "params.dill", "offset"),
    ("tf_offset_none", lambda c: _tf_params_with(c, offset=None), "params.dill", "offset"),
    ("tf_offset_nan", lambda c: _tf_params_with(c, offset=float("nan")), "params.dill", "offset"),
    ("tf_offset_list", lambda c: _tf_params_with(c, offset=[4]), "params.dill", "offset"),
    ("tf_jitter_inf", lambda c: _tf_params_with(c, max_position_jitter=float("inf")), "params.dill", "max_position_jitter"),
    ("torch_c_outer_fraction_str", lambda c: _torch_config_with(c, use_legacy_decoder_channel_override=True,
                                                               decoder_last_c_outer_fraction="0.25"),
     "wts.h5.zip:diffraction_to_obj/model.pth", "[model_config.decoder_last_c_outer_fraction]"),
    ("torch_c_outer_fraction_list", lambda c: _torch_config_with(c, use_legacy_decoder_channel_override=True,
                                                                decoder_last_c_outer_fraction=[0.25]),
     "wts.h5.zip:diffraction_to_obj/model.pth", "[model_config.decoder_last_c_outer_fraction]"),
    ("torch_c_outer_fraction_nan", lambda c: _torch_config_with(c, use_legacy_decoder_channel_override=True,
                                                               decoder_last_c_outer_fraction=float("nan")),
     "wts.h5.zip:diffraction_to_obj/model.pth", "[model_config.decoder_last_c_outer_fraction]"),
    ("torch_config_architecture_array", lambda c: _torch_config_with(c, architecture=np.array([1, 2])),
     "wts.h5.zip:diffraction_to_obj/model.pth", "[architecture]"),
    ("torch_config_parity_mode_array", lambda c: _torch_config_with(c, parity_scale_mode=np.array([1, 2])),
     "wts.h5.zip:diffraction_to_obj/model.pth", "[model_config.parity_scale_mode]"),
    ("ckpt_optimizer_states_int", lambda c: _ckpt_with_item(c, "optimizer_states", _i(5)), "lightning.ckpt",
     "[optimizer_states]: optimizer_states must be a list"),
    ("torch_config_flag_array", lambda c: _torch_config_with(c, batch_norm=np.array([True, False])),
     "wts.h5.zip:diffraction_to_obj/model.pth", "[model_config.batch_norm]"),
]


def re_sub(pattern: bytes, repl: bytes, data: bytes) -> bytes:
    import re

    return re.sub(pattern, repl, data, count=1)


@pytest.mark.parametrize(("build", "member", "detail"), [t[1:] for t in TYPED], ids=[t[0] for t in TYPED])
def test_issue12_typed_decoding(ctx: Ctx, build: Callable[[Ctx], Path], member: str, detail: str) -> None:
    """A decoded value of the wrong type is one ``error:`` line naming member and field, never a traceback."""
    path = build(ctx)
    code, out, err = _cli("validate", str(path))
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    assert member in err and detail in err, err
    for verb in ("inspect", "migrate"):
        args = ("-o", str(ctx.tmp / "out")) if verb == "migrate" else ()
        code, out, err = _cli(verb, str(path), *args)
        assert code in (0, 1) and "Traceback" not in err, (verb, err)
        if code == 1:
            assert err.startswith("error: ") and err.count("\n") == 1, (verb, err)
    assert not (ctx.tmp / "out").exists()


def test_issue12_cli_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the tests, an unexpected ValueError/TypeError/... is one ``error:`` line; in them, a traceback."""
    import click

    from ptycho_bridge.cli import util

    @click.command()
    @util.guarded
    def boom() -> None:
        int("x\nok: spoofed")

    monkeypatch.delenv(util.STRICT_ENV, raising=False)
    result = CliRunner().invoke(boom, [])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: unexpected ValueError") and "\\nok: spoofed" in result.stderr
    monkeypatch.setenv(util.STRICT_ENV, "1")
    assert isinstance(CliRunner().invoke(boom, []).exception, ValueError)
