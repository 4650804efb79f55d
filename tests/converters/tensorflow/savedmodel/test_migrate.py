"""``migrate``/``diff``/``convert`` on a SavedModel-era archive: upgraded to today's ``.keras`` layout.

Why: today's upstream opens this era only through TensorFlow's SavedModel loader (which executes the
archive's graph). ``migrate`` writes bridge-2 whose legacy members are the current upstream layout
(the project's TF writer), with the same tensors bit for bit, and says that today's reassembly
re-centres the offsets where this era's did not.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.ops.diff import diff_archives
from tests._support import FIXTURES_DIR, SAVEDMODEL_DIR

CASE = SAVEDMODEL_DIR / "tf215_N64_gs1"
ARCHIVE = CASE / "wts.h5.zip"
pytestmark = pytest.mark.skipif(not ARCHIVE.exists(), reason=f"SavedModel-era fixture absent ({SAVEDMODEL_DIR})")


def _cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mig") / "wts.h5.zip"
    code, stdout, stderr = _cli("migrate", ARCHIVE, "-o", out, "--json")
    assert code == 0, stderr
    return out, json.loads(stdout)


def test_migrate_validates_and_diff_is_identical(migrated: tuple[Path, dict]) -> None:
    out, summary = migrated
    assert _cli("validate", out)[0] == 0
    report = diff_archives(read_archive(ARCHIVE), read_archive(out), atol=0.0)
    assert report["equivalent"], report
    assert sum(m["compared"] for m in report["models"]) == 88
    code, stdout, _ = _cli("diff", ARCHIVE, out, "--json")
    assert code == 0 and json.loads(stdout)["equivalent"] is True
    notes = " ".join(summary.get("notes", [])) if isinstance(summary, dict) else ""
    assert "re-centres the offsets" in (notes or json.dumps(summary))


def test_legacy_members_are_the_current_keras_layout(migrated: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = migrated
    with zipfile.ZipFile(out) as z:
        legacy = {n: z.read(n) for n in z.namelist() if n == "manifest.dill" or n.startswith("diffraction_to_obj/")
                  and not n.endswith("weights.h5")}
    assert sorted(legacy) == ["diffraction_to_obj/custom_objects.dill", "diffraction_to_obj/model.h5",
                              "diffraction_to_obj/model.keras", "diffraction_to_obj/params.dill", "manifest.dill"]
    keras_era = FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip"
    if keras_era.exists():  # same member set (for the inference model) as a real .keras-era archive
        with zipfile.ZipFile(keras_era) as z:
            real = {n for n in z.namelist() if n == "manifest.dill" or n.startswith("diffraction_to_obj/")}
        assert real == set(legacy)
        with zipfile.ZipFile(io.BytesIO(legacy["diffraction_to_obj/model.keras"])) as ours, \
                zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(keras_era).read("diffraction_to_obj/model.keras"))) as theirs:
            assert sorted(ours.namelist()) == sorted(theirs.namelist())
    # the legacy members alone are a tf-modelmanager-1 archive with the very same tensors
    alone = tmp_path / "legacy.zip"
    with zipfile.ZipFile(alone, "w") as z:
        for name, data in legacy.items():
            z.writestr(name, data)
    upgraded, source = read_archive(alone), read_archive(ARCHIVE)
    assert upgraded.era == "tf-modelmanager-1"
    assert upgraded.primary.spec == source.primary.spec
    for name, value in source.primary.tensors.items():
        assert np.array_equal(upgraded.primary.tensors[name], value), name
    assert upgraded.intensity_scale == source.intensity_scale


def test_convert_to_pytorch(tmp_path: Path) -> None:
    out = tmp_path / "torch.zip"
    code, _, stderr = _cli("convert", ARCHIVE, "--to", "pytorch", "-o", out)
    assert code == 0, stderr
    arch = read_archive(out)
    assert (arch.era, arch.backend, arch.manifest["source_era"]) == ("bridge-2", "pytorch", "tf-savedmodel-1")
    src = read_archive(ARCHIVE).primary.tensors
    for name, value in src.items():
        assert np.array_equal(arch.primary.tensors[name], value), name
