"""Test helpers shared by every test module: repository and fixture paths, crafting archives.

Imported as ``from tests._support import ...`` (never ``import conftest``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES_DIR = SHARED / "fixtures" / "upstream"
# upstream SavedModel-era archives (tf-savedmodel-1): one case dir per archive, golden.npz beside it
SAVEDMODEL_DIR = SHARED / "fixtures" / "upstream-savedmodel"
# Ptychodus 1.7's Lightning checkpoints (upstream torchapi-devel): case_N64_gs1/{model.ckpt, forward_golden.npz, …}
PTYCHODUS_DIR = SHARED / "fixtures" / "ptychodus-torch"
# upstream TF-path reconstructions of one simulated scan (dataset_N64.npz + one folder per case)
RECONSTRUCT_DIR = SHARED / "fixtures" / "reconstruct"
# archives of earlier upstream network variants, written by upstream at that commit, with that commit's goldens
HISTORY_DIR = SHARED / "fixtures" / "upstream-history"




# ---------------------------------------------------------------------------------------------------
# Helpers for crafting archives in tests 
# ---------------------------------------------------------------------------------------------------
import os  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import zipfile  # noqa: E402
from typing import Any, Iterable, Mapping  # noqa: E402

CASES = ("tf_N64_gs1", "tf_N64_gs2", "tf_N128_gs1", "torch_N64_gs1", "torch_N64_gs2")
TF_CASES = tuple(c for c in CASES if c.startswith("tf_"))
TORCH_CASES = tuple(c for c in CASES if c.startswith("torch_"))


def zip_of(members: Mapping[str, bytes], path: Path, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A plain zip of ``members`` (name → bytes) at ``path``, in the given order."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def rewrite_zip(
    src: Path | bytes,
    dst: Path,
    *,
    replace: Mapping[str, bytes] | None = None,
    drop: Iterable[str] = (),
    add: Iterable[tuple[str | zipfile.ZipInfo, bytes]] = (),
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """Copy a zip member by member (stored by default: fast), replacing, dropping or adding members."""
    import io

    replace = dict(replace or {})
    drop = set(drop)
    source = io.BytesIO(src) if isinstance(src, bytes) else src
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = replace.pop(info.filename) if info.filename in replace else zin.read(info.filename)
            zout.writestr(info.filename, data)
        for name, data in replace.items():
            zout.writestr(name, data)
        for name, data in add:
            zout.writestr(name, data)
    return dst


def read_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


_CD_FIELDS = {  # central directory file header: field → (offset, struct format)
    "create_system": (5, "<B"),
    "flag_bits": (8, "<H"),
    "crc": (16, "<I"),
    "compress_size": (20, "<I"),
    "file_size": (24, "<I"),
    "external_attr": (38, "<I"),
}


def patch_central_directory(data: bytes, name: str, **fields: int) -> bytes:
    """Rewrite fields of one member's central-directory entry (to craft lies zipfile won't write)."""
    buf = bytearray(data)
    pos = buf.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", buf, pos + 16)[0]
    count = struct.unpack_from("<H", buf, pos + 10)[0]
    for _ in range(count):
        assert buf[cd_offset : cd_offset + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<HHH", buf, cd_offset + 28)
        entry_name = bytes(buf[cd_offset + 46 : cd_offset + 46 + n]).decode("utf-8")
        if entry_name == name:
            for key, value in fields.items():
                off, fmt = _CD_FIELDS[key]
                struct.pack_into(fmt, buf, cd_offset + off, value)
            return bytes(buf)
        cd_offset += 46 + n + m + k
    raise KeyError(name)


class Evil:
    """Pickles as ``func(*args)``: what a hostile archive would ask the unpickler to run."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def evil_dumps(obj: Any) -> bytes:
    """``pickle.dumps`` (protocol 2: text GLOBAL opcodes) with ``posix.system`` spelled ``os.system``,
    as a pickle written on any platform that names it that way."""
    data = pickle.dumps(obj, protocol=2, fix_imports=False)
    return data.replace(b"cposix\nsystem\n", b"cos\nsystem\n").replace(b"cnt\nsystem\n", b"cos\nsystem\n")


def evil_payloads(sentinel: Path) -> dict[str, Any]:
    """Three ways to run a command on unpickling; each would create ``sentinel``."""
    import builtins
    import subprocess

    return {
        "os.system": Evil(os.system, f"touch {sentinel}"),
        "builtins.eval": Evil(builtins.eval, f"__import__('os').system('touch {sentinel}')"),
        "subprocess.Popen": Evil(subprocess.Popen, ["touch", str(sentinel)]),
    }


def decoded_params(archive: Path, model: str = "diffraction_to_obj") -> dict[str, Any]:
    """A fixture's ``params.dill`` as plain data via the safe reader (probe → ndarray) to edit and re-pickle."""
    from ptycho_bridge.io.safepickle import load

    return load(read_member(archive, f"{model}/params.dill"), member=f"{model}/params.dill")


def torch_twin_of_tf_spec(**kw: Any) -> Any:
    """The torch-expressible twin of a TF spec (what convert's TF→torch plan builds); ``kw`` edits the TF spec."""
    from ptycho_bridge.spec.network import NetworkSpec, tf_spec

    src = tf_spec(**{"N": 64, "gridsize": 1, "n_filters_scale": 1, "object_big": True, "probe_big": True,
                     "pad_object": True, "amp_activation": "sigmoid", **kw})
    return NetworkSpec(**{**src.to_dict(), "outer_width": src.latent_width, "outer_tensors": True,
                          "channels_in": src.channels if src.object_big else 1})


def legacy_only(archive: Path, out: Path) -> Path:
    """A copy of a bridge-2 ``archive`` without its neutral members: what upstream's loaders see."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name not in ("manifest.json", "params.json") and not name.endswith("/weights.h5"):
                dst.writestr(name, src.read(name))
    return out
