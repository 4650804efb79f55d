"""``ptycho-bridge inspect`` / ``validate`` on the real upstream archives, on hostile pickles and on a
corpus of bad archives crafted here.

Expected values come from each case's golden.json / golden.npz and MANIFEST.json; the era names are
../shared/docs/design.md §1's table. Bad archives are built in ``tmp_path`` with zipfile (plus byte patches),
from copies of fixture members; every one must give exit 1 and exactly one ``error:`` line naming
the member or field, without a traceback and without writing anything.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner, Result

from ptycho_bridge.cli import main
from ptycho_bridge.schema import schema_errors
from tests._support import (  # noqa: E402
    FIXTURES_DIR,
    REPO,
    Evil,
    decoded_params,
    evil_dumps,
    evil_payloads,
    patch_central_directory,
    read_member,
    rewrite_zip,
)

ERA_OF_BACKEND = {"tensorflow": "tf-modelmanager-1", "pytorch": "torch-bundle-2"}  # ../shared/docs/design.md §1
FRAMEWORKS = ("torch", "tensorflow", "keras", "dill")


def run_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def manifest_cases(fixtures_dir: Path) -> dict[str, dict[str, Any]]:
    return {c["case"]: c for c in json.loads((fixtures_dir / "MANIFEST.json").read_text())["cases"]}


def _archives() -> list[tuple[str, str]]:
    """Every archive file MANIFEST.json lists (wts.h5.zip, lightning.ckpt), read at collection time."""

    if not FIXTURES_DIR.is_dir():
        return [("tf_N64_gs1", "wts.h5.zip")]  # the fixtures_dir fixture skips it
    cases = json.loads((FIXTURES_DIR / "MANIFEST.json").read_text())["cases"]
    return [(c["case"], f) for c in cases for f in c["files"] if f.endswith((".zip", ".ckpt"))]


ARCHIVES = _archives()


def expected_report(fixtures_dir: Path, case: str, filename: str) -> dict[str, Any]:
    entry = manifest_cases(fixtures_dir)[case]
    gold = json.loads((fixtures_dir / case / "golden.json").read_text())
    cfg = entry["config"]
    assert cfg == gold["config"]
    backend = entry["backend"]
    exp: dict[str, Any] = {
        "backend": backend,
        "era": ERA_OF_BACKEND[backend] if filename == "wts.h5.zip" else "lightning-ckpt",
        "N": cfg["N"],
        "gridsize": cfg["gridsize"],
        "channels": cfg["C"],
        "n_filters_scale": cfg["n_filters_scale"],
        "object_big": cfg.get("object.big", cfg.get("object_big")),
        "probe_big": cfg.get("probe.big", cfg.get("probe_big")),
        "amp_activation": cfg["amp_activation"],
        "probe": None,
        "intensity_scale": None,
    }
    if backend == "tensorflow":
        exp["intensity_scale"] = gold["how_output_was_computed"]["intensity_scale"]
        probe = np.load(fixtures_dir / case / "golden.npz")["probe"]
        exp["probe"] = {"shape": list(probe.shape), "dtype": str(probe.dtype)}
    elif filename == "wts.h5.zip":
        exp["intensity_scale"] = cfg["params_dill_intensity_scale"]
    return exp


def check_report(doc: dict[str, Any], exp: dict[str, Any]) -> None:
    assert schema_errors("inspect-report", doc) == []
    assert doc["era"] == exp["era"] and doc["backend"] == exp["backend"]
    net = doc["network"]
    for key in ("N", "gridsize", "channels", "n_filters_scale", "object_big", "probe_big", "amp_activation"):
        assert net[key] == exp[key], key
    assert doc["intensity_scale"] == exp["intensity_scale"]
    assert doc["probe"] == exp["probe"]
    assert doc["has_checksums"] is False and doc["format_version"] is None


# ---------------------------------------------------------------------------------------------------
# Real archives
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, filename", ARCHIVES, ids=[f"{c}/{f}" for c, f in ARCHIVES])
def test_inspect_json_on_fixtures(fixtures_dir: Path, case: str, filename: str) -> None:
    path = fixtures_dir / case / filename
    result = run_cli("inspect", "--json", path)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    check_report(json.loads(result.stdout), expected_report(fixtures_dir, case, filename))


@pytest.mark.parametrize("case, filename", ARCHIVES, ids=[f"{c}/{f}" for c, f in ARCHIVES])
def test_inspect_tensors_lists_source_names(fixtures_dir: Path, case: str, filename: str) -> None:
    doc = json.loads(run_cli("inspect", "--json", "--tensors", fixtures_dir / case / filename).stdout)
    assert schema_errors("inspect-report", doc) == []
    d2o = doc["models"]["diffraction_to_obj"]
    assert len(d2o["tensors"]) == d2o["n_tensors"] > 0
    assert sum(int(np.prod(t["shape"])) * 4 for t in d2o["tensors"]) == d2o["tensor_bytes"]
    assert all(t["dtype"] == "float32" and t["source_name"] for t in d2o["tensors"])


def test_validate_json_on_all_fixtures(fixtures_dir: Path) -> None:
    paths = [fixtures_dir / c / f for c, f in ARCHIVES]
    result = run_cli("validate", "--json", *paths)
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert schema_errors("validate-report", doc) == []
    assert doc["valid"] is True and len(doc["archives"]) == len(paths)
    for (case, filename), report in zip(ARCHIVES, doc["archives"]):
        assert report["valid"] and report["errors"] == []
        assert report["era"] == expected_report(fixtures_dir, case, filename)["era"]
        checks = {c["check"]: c["ok"] for c in report["checks"]}
        assert checks["container"] and checks["structure"] and checks["spec"]
        assert checks["checksums"] is None  # legacy eras carry none


def test_cli_as_a_subprocess(fixtures_dir: Path) -> None:
    """The installed entry point, in a separate process, on a TF archive and the Lightning checkpoint."""
    script = Path(sys.executable).with_name("ptycho-bridge")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from ptycho_bridge.cli import main; main()"]
    for case, filename in (("tf_N128_gs1", "wts.h5.zip"), ("torch_N64_gs1", "lightning.ckpt")):
        path = fixtures_dir / case / filename
        proc = subprocess.run([*cmd, "inspect", "--json", str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        check_report(json.loads(proc.stdout), expected_report(fixtures_dir, case, filename))
        proc = subprocess.run([*cmd, "validate", "--json", str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert schema_errors("validate-report", doc) == [] and doc["valid"] is True


def test_human_output(fixtures_dir: Path) -> None:
    result = run_cli("inspect", fixtures_dir / "tf_N64_gs2" / "wts.h5.zip")
    assert result.exit_code == 0
    assert "tf-modelmanager-1" in result.stdout and "N=64 gridsize=2 channels=4" in result.stdout
    result = run_cli("validate", fixtures_dir / "torch_N64_gs2" / "wts.h5.zip")
    assert result.exit_code == 0 and "torch-bundle-2" in result.stdout and result.stderr == ""


def test_usage_errors_exit_2() -> None:
    assert run_cli("inspect").exit_code == 2
    assert run_cli("validate").exit_code == 2
    assert run_cli("inspect", "--nope", "x").exit_code == 2


def test_no_framework_is_imported(fixtures_dir: Path) -> None:
    """inspect and validate in a fresh interpreter leave torch/tensorflow/keras/dill unimported."""
    runs = []
    for case, filename in (("tf_N64_gs1", "wts.h5.zip"), ("torch_N64_gs1", "wts.h5.zip"),
                           ("torch_N64_gs1", "lightning.ckpt")):
        path = str(fixtures_dir / case / filename)
        runs += [["inspect", "--json", "--tensors", path], ["validate", path]]
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from ptycho_bridge.cli import main
        codes = []
        for args in {runs!r}:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    main(args, standalone_mode=False)
                codes.append(0)
            except SystemExit as exc:
                codes.append(exc.code)
        print(json.dumps(codes))
        print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    codes_line, modules_line = proc.stdout.strip().splitlines()[-2:]
    assert json.loads(codes_line) == [0] * len(runs)
    assert modules_line == "[]"


# ---------------------------------------------------------------------------------------------------
# Hostile pickles: reported by name, never executed
# ---------------------------------------------------------------------------------------------------
KINDS = ("os.system", "builtins.eval", "subprocess.Popen")
TF = ("tf_N64_gs1", "wts.h5.zip")
TORCH = ("torch_N64_gs1", "wts.h5.zip")


@lru_cache(maxsize=None)
def _params(path: Path) -> dict[str, Any]:
    return decoded_params(path)


def _manifest(backend_case: str) -> dict[str, Any]:
    if backend_case.startswith("tf"):
        return {"models": ["autoencoder", "diffraction_to_obj"], "version": "1.0"}
    return {"models": ["diffraction_to_obj", "autoencoder"], "version": "2.0-pytorch"}


# placement → (source case, member, how the payload is embedded, expected exit code)
PLACEMENTS: dict[str, tuple[str, str, Callable[[Path, Any], Any], int]] = {
    "tf-params-value": (TF[0], "diffraction_to_obj/params.dill", lambda p, ev: {**_params(p), "hook": ev}, 0),
    "torch-params-value": (TORCH[0], "diffraction_to_obj/params.dill", lambda p, ev: {**_params(p), "hook": ev}, 0),
    "tf-params-whole": (TF[0], "diffraction_to_obj/params.dill", lambda p, ev: ev, 1),
    "torch-params-whole": (TORCH[0], "diffraction_to_obj/params.dill", lambda p, ev: ev, 1),
    "tf-params-N": (TF[0], "diffraction_to_obj/params.dill", lambda p, ev: {**_params(p), "N": ev}, 1),
    "tf-manifest-value": (TF[0], "manifest.dill", lambda p, ev: {**_manifest("tf"), "hook": ev}, 0),
    "torch-manifest-value": (TORCH[0], "manifest.dill", lambda p, ev: {**_manifest("torch"), "hook": ev}, 0),
    "tf-manifest-whole": (TF[0], "manifest.dill", lambda p, ev: ev, 1),
    "tf-manifest-version": (TF[0], "manifest.dill", lambda p, ev: {**_manifest("tf"), "version": ev}, 1),
    "torch-manifest-models": (TORCH[0], "manifest.dill", lambda p, ev: {**_manifest("torch"), "models": ev}, 1),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_hostile_pickle_is_named_not_run(fixtures_dir: Path, tmp_path: Path, placement: str, kind: str) -> None:
    case, member, embed, want_code = PLACEMENTS[placement]
    src = fixtures_dir / case / "wts.h5.zip"
    sentinel = tmp_path / "PWNED"
    payload = evil_dumps(embed(src, evil_payloads(sentinel)[kind]))
    assert kind.split(".")[1].encode() in payload  # the pickle really references the callable
    path = rewrite_zip(src, tmp_path / "wts.h5.zip", replace={member: payload})
    before = sorted(tmp_path.iterdir())

    inspect = run_cli("inspect", "--json", path)
    validate = run_cli("validate", "--json", path)
    assert not sentinel.exists()
    assert sorted(tmp_path.iterdir()) == before
    assert inspect.exit_code == want_code and validate.exit_code == want_code
    vdoc = json.loads(validate.stdout)
    assert schema_errors("validate-report", vdoc) == []
    report = vdoc["archives"][0]
    if want_code == 0:
        idoc = json.loads(inspect.stdout)
        assert schema_errors("inspect-report", idoc) == []
        assert any(kind in w and "never executed" in w for w in idoc["warnings"]), idoc["warnings"]
        assert any(kind in w for w in report["warnings"])
        assert report["valid"] is True
    else:
        lines = inspect.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and kind in lines[0], inspect.stderr
        assert member in lines[0]
        assert report["valid"] is False and kind in report["errors"][0]
    # the text form of validate says it too
    text = run_cli("validate", path)
    assert kind in text.stdout + text.stderr
    assert not sentinel.exists()


# ---------------------------------------------------------------------------------------------------
# The bad-archive corpus
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    id: str
    build: Callable[[Path, Path], Path]  # (fixtures_dir, out_dir) → archive path
    expect: tuple[str, ...]  # fragments the single error line must contain


def _tf(fx: Path) -> Path:
    return fx / "tf_N64_gs1" / "wts.h5.zip"


def _torch(fx: Path) -> Path:
    return fx / "torch_N64_gs1" / "wts.h5.zip"


def _write(out: Path, data: bytes) -> Path:
    path = out / "bad.zip"
    path.write_bytes(data)
    return path


def _bad_crc(fx: Path, out: Path) -> Path:
    path = rewrite_zip(_torch(fx), out / "bad.zip")  # stored: the manifest bytes sit verbatim in the file
    data = bytearray(path.read_bytes())
    manifest = read_member(_torch(fx), "manifest.dill")
    data[bytes(data).find(manifest) + len(manifest) // 2] ^= 0xFF
    return _write(out, bytes(data))


def _symlink(fx: Path, out: Path) -> Path:
    info = zipfile.ZipInfo("diffraction_to_obj/link")
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return rewrite_zip(_torch(fx), out / "bad.zip", add=[(info, b"/etc/passwd")])


def _duplicate(fx: Path, out: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rewrite_zip(_torch(fx), out / "bad.zip", add=[("manifest.dill", read_member(_torch(fx), "manifest.dill"))])


def _bomb(fx: Path, out: Path) -> Path:
    return rewrite_zip(_torch(fx), out / "bad.zip", add=[("diffraction_to_obj/bomb.bin", bytes(50 * 2**20))],
                       compression=zipfile.ZIP_DEFLATED)


def _size_lie(fx: Path, out: Path) -> Path:
    """manifest.dill declares 64 bytes but inflates to 50 MiB of zeros."""
    path = rewrite_zip(_torch(fx), out / "bad.zip", replace={"manifest.dill": bytes(50 * 2**20)},
                       compression=zipfile.ZIP_DEFLATED)
    return _write(out, patch_central_directory(path.read_bytes(), "manifest.dill", file_size=64,
                                               crc=zlib.crc32(bytes(64))))


def _encrypted(fx: Path, out: Path) -> Path:
    path = rewrite_zip(_torch(fx), out / "bad.zip")
    return _write(out, patch_central_directory(path.read_bytes(), "manifest.dill", flag_bits=0x1))


def _params_edit(change: Callable[[dict[str, Any]], Any], *, torch: bool = False, drop: tuple[str, ...] = ()):
    def build(fx: Path, out: Path) -> Path:
        src = _torch(fx) if torch else _tf(fx)
        params = dict(_params(src))
        change(params)
        return rewrite_zip(src, out / "bad.zip", replace={"diffraction_to_obj/params.dill": evil_dumps(params)}, drop=drop)

    return build


def _tf_kernel_gridsize(fx: Path, out: Path) -> Path:
    """The first encoder kernel has 4 input channels (gridsize 2) in a gridsize-1 archive."""
    import h5py

    keras = read_member(_tf(fx), "diffraction_to_obj/model.keras")
    with zipfile.ZipFile(io.BytesIO(keras)) as kz:
        weights = io.BytesIO(kz.read("model.weights.h5"))
    with h5py.File(weights, "r+") as f:
        group = f["layers/conv2d/vars"]
        assert group.attrs["name"] == "conv2d" and group["0"].shape == (3, 3, 1, 32)
        del group["0"]
        group.create_dataset("0", data=np.zeros((3, 3, 4, 32), np.float32))
    new_keras = io.BytesIO()
    rewrite_zip(keras, new_keras, replace={"model.weights.h5": weights.getvalue()})  # type: ignore[arg-type]
    return rewrite_zip(_tf(fx), out / "bad.zip", replace={"diffraction_to_obj/model.keras": new_keras.getvalue()})


def _truncated_h5(fx: Path, out: Path) -> Path:
    keras = read_member(_tf(fx), "diffraction_to_obj/model.keras")
    with zipfile.ZipFile(io.BytesIO(keras)) as kz:
        weights = kz.read("model.weights.h5")
    new_keras = io.BytesIO()
    rewrite_zip(keras, new_keras, replace={"model.weights.h5": weights[: len(weights) // 2]})  # type: ignore[arg-type]
    return rewrite_zip(_tf(fx), out / "bad.zip", replace={"diffraction_to_obj/model.keras": new_keras.getvalue()})


def _torch_state_edit(change: Callable[[dict[str, Any]], None]):
    def build(fx: Path, out: Path) -> Path:
        torch = pytest.importorskip("torch")
        state = torch.load(io.BytesIO(read_member(_torch(fx), "diffraction_to_obj/model.pth")), weights_only=True)
        change(state)
        buf = io.BytesIO()
        torch.save(state, buf)
        return rewrite_zip(_torch(fx), out / "bad.zip", replace={"diffraction_to_obj/model.pth": buf.getvalue()})

    return build


def _sample(out: Path) -> Path:
    from ptycho_bridge.ops.sample import write_sample

    return write_sample(out / "sample.zip")


def _bridge_manifest_edit(change: Callable[[dict[str, Any]], None]):
    def build(fx: Path, out: Path) -> Path:
        sample = _sample(out)
        manifest = json.loads(read_member(sample, "manifest.json"))
        change(manifest)
        path = rewrite_zip(sample, out / "bad.zip", replace={"manifest.json": json.dumps(manifest).encode()})
        sample.unlink()
        return path

    return build


def _bridge_extra_member(fx: Path, out: Path) -> Path:
    sample = _sample(out)
    path = rewrite_zip(sample, out / "bad.zip", add=[("extra.bin", b"unlisted")])
    sample.unlink()
    return path


def _pop(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d.__setitem__(key, value)


CORPUS = [
    Bad("empty-file", lambda fx, out: _write(out, b""), ("bad.zip", "empty file")),
    Bad("not-a-zip", lambda fx, out: _write(out, b"this is not a zip\n" * 100), ("bad.zip", "not a readable zip")),
    Bad("truncated-zip", lambda fx, out: _write(out, _tf(fx).read_bytes()[: 4_000_000]), ("bad.zip", "not a readable zip")),
    Bad("bad-crc", _bad_crc, ("bad.zip:manifest.dill", "CRC")),
    Bad("zip-slip", lambda fx, out: rewrite_zip(_torch(fx), out / "bad.zip", add=[("../x", b"x")]), ("bad.zip:../x", "zip slip")),
    Bad("absolute-path", lambda fx, out: rewrite_zip(_torch(fx), out / "bad.zip", add=[("/tmp/x", b"x")]),
        ("bad.zip:/tmp/x", "absolute")),
    Bad("drive-letter", lambda fx, out: rewrite_zip(_torch(fx), out / "bad.zip", add=[("C:/x", b"x")]),
        ("bad.zip:C:/x", "drive letter")),
    Bad("backslash", lambda fx, out: rewrite_zip(_torch(fx), out / "bad.zip", add=[("a\\..\\x", b"x")]),
        ("a\\..\\x", "backslash")),
    Bad("symlink", _symlink, ("bad.zip:diffraction_to_obj/link", "symbolic link")),
    Bad("duplicate-member", _duplicate, ("bad.zip:manifest.dill", "duplicate")),
    Bad("encrypted-member", _encrypted, ("bad.zip:manifest.dill", "encrypted")),
    Bad("bzip2-member", lambda fx, out: rewrite_zip(_torch(fx), out / "bad.zip", compression=zipfile.ZIP_BZIP2),
        ("bad.zip:", "compression method 12")),
    Bad("zip-bomb-ratio", _bomb, ("bad.zip:diffraction_to_obj/bomb.bin", "compression ratio")),
    Bad("declared-size-lie", _size_lie, ("bad.zip:manifest.dill",)),
    Bad("missing-manifest", lambda fx, out: rewrite_zip(_torch(fx), out / "bad.zip", drop=["manifest.dill"]),
        ("bad.zip", "no manifest")),
    Bad("manifest-is-a-list", lambda fx, out: rewrite_zip(
        _tf(fx), out / "bad.zip", replace={"manifest.dill": pickle.dumps(["autoencoder", "diffraction_to_obj"])}),
        ("bad.zip:manifest.dill", "must be a dict, found list")),
    Bad("unknown-era", lambda fx, out: rewrite_zip(
        _tf(fx), out / "bad.zip", replace={"manifest.dill": pickle.dumps({**_manifest("tf"), "version": "9.9"})}),
        ("bad.zip:manifest.dill", "[version]", "'9.9'")),
    Bad("manifest-lists-absent-model", lambda fx, out: rewrite_zip(
        _tf(fx), out / "bad.zip", replace={"manifest.dill": pickle.dumps({**_manifest("tf"), "models": ["ghost"]})}),
        ("ghost/",)),
    Bad("params-without-N", _params_edit(_pop("N")), ("bad.zip:diffraction_to_obj/params.dill", "[N]", "missing")),
    Bad("params-N-is-os.system", _params_edit(_set("N", os.system)),
        ("bad.zip:diffraction_to_obj/params.dill", "[N]", "os.system", "not executed")),
    Bad("params-N-128-vs-config", _params_edit(_set("N", 128)),
        ("diffraction_to_obj/params.dill", "[N]", "128", "config.json", "64")),
    Bad("params-gridsize-2-vs-config", _params_edit(_set("gridsize", 2)),
        ("diffraction_to_obj/params.dill", "[gridsize]", "4", "config.json")),
    Bad("tf-kernel-shape-vs-gridsize", _tf_kernel_gridsize,
        ("model.weights.h5", "encoder.0.conv1.weight", "[32, 4, 3, 3]", "[32, 1, 3, 3]")),
    Bad("keras-not-a-zip", lambda fx, out: rewrite_zip(
        _tf(fx), out / "bad.zip", replace={"diffraction_to_obj/model.keras": b"junk" * 100}),
        ("bad.zip:diffraction_to_obj/model.keras", "not a readable zip")),
    Bad("truncated-hdf5", _truncated_h5, ("diffraction_to_obj/model.keras:model.weights.h5", "HDF5")),
    Bad("torch-gridsize-2-vs-metadata", _params_edit(_set("gridsize", 2), torch=True),
        ("diffraction_to_obj/params.dill", "[gridsize]", "C=4", "data_config says C=1")),
    Bad("torch-gridsize-2-vs-tensors", _params_edit(_set("gridsize", 2), torch=True, drop=("torch_scaling_metadata.pt",)),
        ("bad.zip:diffraction_to_obj/model.pth", "encoder.0.conv1.weight", "[32, 1, 3, 3]", "[32, 4, 3, 3]")),
    Bad("torch-missing-tensor", _torch_state_edit(lambda s: s.pop("model.autoencoder.decoder_amp.amp.conv2.bias")),
        ("bad.zip:diffraction_to_obj/model.pth", "missing tensor", "amp.conv2.bias")),
    Bad("torch-misshaped-tensor", _torch_state_edit(
        lambda s: s.__setitem__("model.autoencoder.encoder.blocks.1.conv2.weight",
                                s["model.autoencoder.encoder.blocks.1.conv2.weight"][:, :32].clone())),
        ("bad.zip:diffraction_to_obj/model.pth", "encoder.1.conv2.weight", "[64, 32, 3, 3]")),
    Bad("torch-unexpected-tensor", _torch_state_edit(
        lambda s: s.__setitem__("model.autoencoder.encoder.blocks.0.conv3.weight", s["model.forward_model.alpha"].clone())),
        ("bad.zip:diffraction_to_obj/model.pth", "unexpected tensor", "encoder.blocks.0.conv3.weight")),
    Bad("bridge-newer-major", _bridge_manifest_edit(_set("format_version", "3.0.0")),
        ("bad.zip:manifest.json", "[format_version]", "3.0.0")),
    Bad("bridge-schema-missing-field", _bridge_manifest_edit(_pop("backend")),
        ("bad.zip:manifest.json", "'backend' is a required property")),
    Bad("bridge-unlisted-member", _bridge_extra_member, ("bad.zip:manifest.json", "extra.bin")),
]


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.mark.parametrize("bad", CORPUS, ids=[b.id for b in CORPUS])
def test_bad_archive(fixtures_dir: Path, tmp_path: Path, bad: Bad) -> None:
    path = bad.build(fixtures_dir, tmp_path)
    before = _files(tmp_path)
    for command in (["inspect"], ["inspect", "--json"], ["validate"]):
        result = run_cli(*command, path)
        assert result.exit_code == 1, (command, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (command, result.stderr)
        line = lines[0]
        assert line.startswith("error: ") and "Traceback" not in result.output
        for fragment in bad.expect:
            assert fragment in line, (command, fragment, line)
        if command == ["inspect", "--json"]:
            assert result.stdout == ""
    result = run_cli("validate", "--json", path)
    assert result.exit_code == 1 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert schema_errors("validate-report", doc) == []
    report = doc["archives"][0]
    assert doc["valid"] is False and report["valid"] is False
    assert [c["ok"] for c in report["checks"]][-1] is False  # the failing check is the last one run
    assert all(fragment in report["errors"][0] for fragment in bad.expect)
    assert _files(tmp_path) == before


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15 and len({b.id for b in CORPUS}) == len(CORPUS)


def test_validate_reports_each_archive(fixtures_dir: Path, tmp_path: Path) -> None:
    """One bad archive among good ones: exit 1, one error line for the bad one, the others valid."""
    bad = rewrite_zip(_torch(fixtures_dir), tmp_path / "bad.zip", add=[("../x", b"x")])
    result = run_cli("validate", "--json", _tf(fixtures_dir), bad, _torch(fixtures_dir))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [r["valid"] for r in doc["archives"]] == [True, False, True]
    text = run_cli("validate", _tf(fixtures_dir), bad, _torch(fixtures_dir))
    assert text.exit_code == 1
    lines = text.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: {bad}:") and "zip slip" in lines[0]
    assert lines[1] == "2 valid, 1 invalid"  # the verdict line of a many-archive run


# ---------------------------------------------------------------------------------------------------
# bridge-2 checksums (validate verifies them; inspect does not need to)
# ---------------------------------------------------------------------------------------------------
def _flip_tensor_byte(sample: Path) -> tuple[bytes, str]:
    """weights.h5 with the lowest mantissa byte of encoder.0.conv1.weight[0] flipped (still finite)."""
    from ptycho_bridge import read_archive

    weights = bytearray(read_member(sample, "diffraction_to_obj/weights.h5"))
    tensor = read_archive(sample).primary.tensors["encoder.0.conv1.weight"]
    offset = bytes(weights).find(np.ascontiguousarray(tensor).tobytes())
    assert offset > 0
    weights[offset] ^= 0x01
    return bytes(weights), "diffraction_to_obj/weights.h5"


def test_flipped_byte_in_weights_fails_member_checksum(tmp_path: Path) -> None:
    sample = _sample(tmp_path)
    weights, member = _flip_tensor_byte(sample)
    path = rewrite_zip(sample, tmp_path / "flipped.zip", replace={member: weights})
    before = _files(tmp_path)
    result = run_cli("validate", path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"flipped.zip:{member}" in lines[0] and "sha256" in lines[0]
    doc = json.loads(run_cli("validate", "--json", path).stdout)
    assert schema_errors("validate-report", doc) == []
    checks = {c["check"]: c["ok"] for c in doc["archives"][0]["checks"]}
    assert checks["checksums"] is False and checks["schema"] is True
    assert _files(tmp_path) == before
    # the untouched sample validates, with every checksum verified
    good = json.loads(run_cli("validate", "--json", sample).stdout)
    assert good["valid"] and {c["check"]: c["ok"] for c in good["archives"][0]["checks"]}["checksums"] is True


def test_flipped_tensor_with_consistent_member_hash_fails_tensor_checksum(tmp_path: Path) -> None:
    import hashlib

    sample = _sample(tmp_path)
    weights, member = _flip_tensor_byte(sample)
    manifest = json.loads(read_member(sample, "manifest.json"))
    manifest["members"][member] = {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    path = rewrite_zip(sample, tmp_path / "flipped.zip",
                       replace={member: weights, "manifest.json": json.dumps(manifest).encode()})
    result = run_cli("validate", path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and member in lines[0] and "encoder.0.conv1.weight" in lines[0] and "sha256" in lines[0]


def test_bridge_newer_minor_is_accepted(tmp_path: Path) -> None:
    sample = _sample(tmp_path)
    manifest = json.loads(read_member(sample, "manifest.json"))
    major = manifest["format_version"].split(".")[0]
    manifest["format_version"] = f"{major}.99.0"
    path = rewrite_zip(sample, tmp_path / "minor.zip", replace={"manifest.json": json.dumps(manifest).encode()})
    result = run_cli("inspect", "--json", path)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert schema_errors("inspect-report", doc) == [] and doc["format_version"] == f"{major}.99.0"


def test_bridge_inspect_report(tmp_path: Path) -> None:
    from ptycho_bridge.ops.sample import sample_params

    sample = _sample(tmp_path)
    doc = json.loads(run_cli("inspect", "--json", "--tensors", sample).stdout)
    assert schema_errors("inspect-report", doc) == []
    params = sample_params()
    assert doc["era"] == "bridge-2" and doc["has_checksums"] is True and doc["source_era"] == "sample"
    assert doc["intensity_scale"] == params["intensity_scale"]
    assert doc["probe"] == {"shape": list(params["probe"].shape), "dtype": "complex64"}
    assert doc["network"]["N"] == params["N"] and doc["network"]["gridsize"] == params["gridsize"]
    manifest = json.loads(read_member(sample, "manifest.json"))
    index = manifest["models"]["diffraction_to_obj"]["tensors"]
    assert {t["name"]: t["sha256"] for t in doc["models"]["diffraction_to_obj"]["tensors"]} == {
        k: v["sha256"] for k, v in index.items()}


def test_evil_helper_spells_os_system() -> None:
    """Guard for the corpus: the crafted pickle names ``os.system`` exactly (not posix/nt)."""
    data = evil_dumps(Evil(os.system, "true"))
    assert b"cos\nsystem\n" in data
