"""bridge-2 (issue 23): a ``weights.h5`` dataset that neither manifest.json nor params.json declares fails validate."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.formats.bridge2.write import tensor_offsets
from ptycho_bridge.ops.sample import write_sample
from tests._support import read_member, rewrite_zip

WEIGHTS = "diffraction_to_obj/weights.h5"


def _rewritten(sample: Path, dst: Path, extra: dict[str, np.ndarray]) -> Path:
    """The sample with ``weights.h5`` written again (same datasets, plus ``extra``), manifest resealed."""
    manifest = json.loads(read_member(sample, "manifest.json"))
    out = io.BytesIO()
    with h5py.File(io.BytesIO(read_member(sample, WEIGHTS)), "r") as src, h5py.File(out, "w", libver="earliest") as f:
        for group in ("tensors", "params"):
            for name, dset in src[group].items():
                f.create_dataset(f"{group}/{name}", data=dset[()])
        for path, arr in extra.items():
            f.create_dataset(path, data=arr)
    image = out.getvalue()
    for name, offset in tensor_offsets(image).items():
        manifest["models"]["diffraction_to_obj"]["tensors"][name]["offset"] = offset
    manifest["members"][WEIGHTS] = {"size": len(image), "sha256": hashlib.sha256(image).hexdigest()}
    return rewrite_zip(sample, dst, replace={WEIGHTS: image, "manifest.json": json.dumps(manifest).encode()})


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("s") / "wts.h5.zip")


def _validate(path: Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["validate", str(path)])
    return res.exit_code, res.stderr + res.stdout


def test_rewritten_without_extras_still_validates(sample: Path, tmp_path: Path) -> None:
    code, out = _validate(_rewritten(sample, tmp_path / "same.zip", {}))
    assert code == 0, out


@pytest.mark.parametrize("dataset", ["/extra/payload", "/params/unlisted", "/hidden"])
def test_undeclared_dataset_fails_validate_naming_it(sample: Path, tmp_path: Path, dataset: str) -> None:
    bad = _rewritten(sample, tmp_path / "bad.zip", {dataset: np.arange(10, dtype=np.float32)})
    code, out = _validate(bad)
    assert code == 1, out
    assert dataset in out and WEIGHTS in out and "declared by neither" in out, out


def test_convert_never_carries_an_undeclared_dataset(sample: Path, tmp_path: Path) -> None:
    bad = _rewritten(sample, tmp_path / "bad.zip", {"/extra/payload": np.arange(10, dtype=np.float32)})
    res = CliRunner().invoke(main, ["convert", str(bad), "--to", "pytorch", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    written = tmp_path / "out" / "wts.h5.zip"
    with h5py.File(io.BytesIO(read_member(written, WEIGHTS)), "r") as f:
        names: list[str] = []
        f.visit(names.append)
    assert "extra" not in names and "tensors" in names
    assert _validate(written)[0] == 0


NOTE = "note: metadata only: run `validate` to check tensors and checksums"


def test_inspect_exits_0_but_says_it_checked_metadata_only(sample: Path, tmp_path: Path) -> None:
    bad = _rewritten(sample, tmp_path / "bad.zip", {"/hidden": np.zeros(3, np.float32)})
    assert _validate(bad)[0] == 1
    runner = CliRunner()
    for paths in ([bad], [bad, sample]):  # one archive, and several (the note before the verdict line)
        res = runner.invoke(main, ["inspect", *map(str, paths)])
        assert res.exit_code == 0, res.output
        err = res.stderr.splitlines()
        assert err[0] == NOTE and len(err) == len(paths), err  # several: the note, then "2 read, 0 failed"
        assert NOTE not in res.stdout
    res = runner.invoke(main, ["inspect", "--json", str(bad)])
    assert res.exit_code == 0 and res.stderr == "" and json.loads(res.stdout)["era"] == "bridge-2"


def test_verify_checksums_reads_each_member_once(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """params.json and weights.h5 are parsed from the bytes the sha256 pass read, not read again."""
    from ptycho_bridge.formats.detect import read_archive
    from ptycho_bridge.formats.bridge2.verify import verify_checksums
    from ptycho_bridge.io.safezip import SafeZip

    manifest = read_archive(sample).manifest
    reads: list[str] = []
    real = SafeZip.read

    def counting(self: SafeZip, name: str, **kw: object) -> bytes:
        reads.append(name)
        return real(self, name, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(SafeZip, "read", counting)
    with SafeZip(sample) as zf:
        verify_checksums(zf, manifest)
    assert "params.json" in reads and sorted(reads) == sorted(manifest["members"])


def test_read_json_holds_bytes_already_read_to_the_same_bound(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ptycho_bridge.formats.base as base
    from ptycho_bridge.errors import ArchiveLimitError
    from ptycho_bridge.io.safezip import SafeZip

    with SafeZip(sample) as zf:
        raw = zf.read("params.json")
        assert base.read_json(zf, "params.json", raw=raw) == base.read_json(zf, "params.json")
        monkeypatch.setattr(base, "MAX_JSON_BYTES", len(raw) - 1)
        errors = []
        for kw in ({}, {"raw": raw}):
            with pytest.raises(ArchiveLimitError) as info:
                base.read_json(zf, "params.json", **kw)  # type: ignore[arg-type]
            errors.append(str(info.value))
    assert errors[0] == errors[1] and f"member is {len(raw)} bytes, limit here is {len(raw) - 1}" in errors[0]
