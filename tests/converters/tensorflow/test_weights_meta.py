"""converters/tensorflow/weights_meta.py: the TF reader answers from the pure metadata scan exactly as from h5py.

Each case reads the same bytes twice: as shipped (the pure scan answers, no child is forked) and with the scan
forced to answer None (the isolated h5py path of before). Reports, tensors infos, payloads, warnings and errors
must be identical; tensor data read by libhdf5 is held to the scanned shapes and dtypes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import converters.tensorflow.read as tf_read
import converters.tensorflow.weights_meta as weights_meta
from converters.tensorflow.read import model_h5_scale
from ptycho_bridge.errors import ArchiveError, FormatError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.io.h5meta import H5Metadata
from ptycho_bridge.io.safezip import SafeZip
from tests._support import FIXTURES_DIR, REPO, SAVEDMODEL_DIR, TF_CASES

h5py = pytest.importorskip("h5py")
needs_fixtures = pytest.mark.skipif(not FIXTURES_DIR.is_dir(), reason=f"fixtures not found at {FIXTURES_DIR}")


def no_child(*args: Any, **kw: Any) -> Any:
    raise AssertionError("the isolated h5py child was forked although the pure scan should have answered")


def force_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_meta, "scan", lambda image: None)


def summary(archive: Any) -> dict[str, Any]:
    return {name: ({k: (i.shape, i.dtype, i.source_name) for k, i in entry.tensor_info.items()}, entry.payload, entry.warnings)
            for name, entry in archive.models.items()} | {"warnings": archive.warnings}


@needs_fixtures
@pytest.mark.parametrize("case", TF_CASES)
def test_fixture_reads_the_same_without_libhdf5(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = FIXTURES_DIR / case / "wts.h5.zip"
    with monkeypatch.context() as m:
        m.setattr(tf_read, "run_isolated", no_child)
        fast = summary(read_archive(path))
    force_fallback(monkeypatch)
    assert fast == summary(read_archive(path))
    assert fast["diffraction_to_obj"][1]["model_h5_intensity_scale"] > 0


@pytest.mark.skipif(not any(SAVEDMODEL_DIR.glob("*/wts.h5.zip")), reason=f"fixtures not found at {SAVEDMODEL_DIR}")
def test_savedmodel_model_h5_scale_without_libhdf5(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in sorted(SAVEDMODEL_DIR.glob("*/wts.h5.zip")):
        with SafeZip(path, label=path.name) as zf:
            with monkeypatch.context() as m:
                m.setattr(tf_read, "run_isolated", no_child)
                fast = model_h5_scale(zf, "diffraction_to_obj/model.h5")
            with monkeypatch.context() as m:
                force_fallback(m)
                assert fast == model_h5_scale(zf, "diffraction_to_obj/model.h5") and fast > 0


def _model_h5(tmp_path: Path, build: Any) -> SafeZip:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("m/model.h5", buf.getvalue())
    return SafeZip(path, label="a.zip")


@pytest.mark.parametrize("value, expected", [(None, None), (np.float64(988.25), 988.25), (np.int32(7), 7.0),
                                             (np.float32(0.1), float(np.float32(0.1))), (np.array([1.5]), 1.5),
                                             ("988", FormatError), (np.array([1.0, 2.0]), FormatError)])
def test_model_h5_scale_answers_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: Any, expected: Any) -> None:
    def build(f: Any) -> None:
        if value is not None:
            f.attrs["intensity_scale"] = value

    def read(fallback: bool) -> Any:
        with monkeypatch.context() as m, _model_h5(tmp_path, build) as zf:
            if fallback:
                force_fallback(m)
            try:
                return model_h5_scale(zf, "m/model.h5")
            except ArchiveError as exc:
                return type(exc), str(exc)

    got = read(False)
    assert got == read(True)
    if expected is FormatError:
        assert got[0] is FormatError and "intensity_scale attribute is" in got[1]
    else:
        assert got == expected


@needs_fixtures
def test_a_parser_differential_is_refused_when_tensors_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the scan and libhdf5 disagree on a dtype, loading the tensors fails naming member and dataset."""
    real = weights_meta.scan

    def lying(image: bytes) -> H5Metadata | None:
        meta = real(image)
        if meta is not None and "/layers/conv2d/vars/0" in meta.datasets:
            shape, _ = meta.datasets["/layers/conv2d/vars/0"]
            meta.datasets["/layers/conv2d/vars/0"] = (shape, "float64")
        return meta

    monkeypatch.setattr(weights_meta, "scan", lying)
    archive = read_archive(FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip")
    entry = archive.models["diffraction_to_obj"]
    assert {i.dtype for i in entry.tensor_info.values()} == {"float32", "float64"}
    with pytest.raises(FormatError, match=r"model\.weights\.h5.*dataset layers/conv2d/vars/0: libhdf5 reads shape "
                                          r"\[3, 3, 1, 32\] float32, the metadata read reported \[3, 3, 1, 32\] float64"):
        dict(entry.tensors)


def _inspect(path: Path, *, fallback: bool) -> tuple[bytes, bool]:
    code = textwrap.dedent(f"""
        import sys
        if {fallback!r}:
            import converters.tensorflow.weights_meta as wm
            wm.scan = lambda image: None
        from ptycho_bridge.cli import main
        try:
            main(["inspect", "--json", {str(path)!r}], standalone_mode=False)
        except SystemExit as exc:
            assert not exc.code, exc.code
        sys.stdout.flush()
        sys.stderr.write("\\nH5PY=" + str("h5py" in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout, proc.stderr.decode().rsplit("H5PY=", 1)[1] == "True"


@needs_fixtures
def test_inspect_json_imports_no_h5py_and_prints_what_the_h5py_path_prints() -> None:
    path = FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip"
    fast, fast_h5py = _inspect(path, fallback=False)
    slow, slow_h5py = _inspect(path, fallback=True)
    assert (fast_h5py, slow_h5py) == (False, True)  # the fallback really ran the h5py path
    assert fast == slow
    assert json.loads(fast)["era"] == "tf-modelmanager-1"
