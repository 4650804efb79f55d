"""``inspect`` / ``validate`` over many archives: folders (``-r``), the process pool (``-j``), ``--jsonl``
streaming, the stderr verdict line and the exit code, on copies of the real fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.cli.batch import expand, resolve_single
from ptycho_bridge.schema import schema_errors
from tests._support import FIXTURES_DIR

pytestmark = pytest.mark.skipif(not FIXTURES_DIR.is_dir(), reason=f"fixtures not found at {FIXTURES_DIR}")


def run(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{a.zip (torch bundle), b.ckpt (Lightning), notes.txt, sub/c.zip (TF), sub/junk.zip (not a zip)}."""
    root = tmp_path_factory.mktemp("many")
    (root / "sub").mkdir()
    shutil.copy(FIXTURES_DIR / "torch_N64_gs1" / "wts.h5.zip", root / "a.zip")
    shutil.copy(FIXTURES_DIR / "torch_N64_gs1" / "lightning.ckpt", root / "b.ckpt")
    shutil.copy(FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip", root / "sub" / "c.zip")
    (root / "notes.txt").write_text("not an archive")
    (root / "sub" / "junk.zip").write_bytes(b"this is not a zip file")
    return root


def test_expand_folders(tree: Path) -> None:
    assert expand([tree], recursive=False) == [tree / "a.zip", tree / "b.ckpt"]
    assert expand([tree], recursive=True) == [tree / "a.zip", tree / "b.ckpt", tree / "sub" / "c.zip",
                                              tree / "sub" / "junk.zip"]
    empty = tree / "sub" / "empty"
    empty.mkdir(exist_ok=True)
    assert expand([empty, tree / "a.zip"], recursive=False) == [empty, tree / "a.zip"]  # fails later, by name
    # one archive given as its folder keeps the folder as the report's path (unchanged single-archive output)
    case = FIXTURES_DIR / "tf_N64_gs1"
    assert resolve_single((case,), expand([case], False)) == case
    assert resolve_single((tree,), expand([tree], False)) is None


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_inspect_jsonl_streams_valid_reports_and_a_verdict(tree: Path, jobs: str) -> None:
    result = run("inspect", "--jsonl", "-r", "-j", jobs, tree)
    assert result.exit_code == 1  # junk.zip
    lines = result.stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["path"] for d in docs] == [str(tree / "a.zip"), str(tree / "b.ckpt"), str(tree / "sub" / "c.zip")]
    assert [d["era"] for d in docs] == ["torch-bundle-2", "lightning-ckpt", "tf-modelmanager-1"]
    for d in docs:
        assert schema_errors("inspect-report", d) == []
    err = result.stderr.splitlines()
    assert err[-1] == "3 read, 1 failed"
    assert len(err) == 2 and err[0].startswith(f"error: {tree / 'sub' / 'junk.zip'}: ")


def test_jobs_do_not_change_output(tree: Path) -> None:
    one, two = run("validate", "--jsonl", "-r", "-j", "1", tree), run("validate", "--jsonl", "-r", "-j", "2", tree)
    assert one.stdout == two.stdout and one.stderr == two.stderr
    assert one.exit_code == two.exit_code == 1
    docs = [json.loads(line) for line in one.stdout.splitlines()]
    assert [d["valid"] for d in docs] == [True, True, True, False]
    for d in docs:  # each line is one item of validate-report's "archives"
        assert schema_errors("validate-report", {"valid": d["valid"], "archives": [d]}) == []
    assert one.stderr.splitlines()[-1] == "3 valid, 1 invalid"


def test_all_good_exits_0(tree: Path) -> None:
    result = run("validate", "-j", "2", tree)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == ["2 valid, 0 invalid"]
    result = run("inspect", tree / "a.zip", tree / "b.ckpt")
    assert result.exit_code == 0 and "torch-bundle-2" in result.stdout and "lightning-ckpt" in result.stdout
    assert result.stderr.splitlines()[-1] == "2 read, 0 failed"


def test_validate_json_many_keeps_its_document(tree: Path) -> None:
    result = run("validate", "--json", "-r", tree)
    doc = json.loads(result.stdout)
    assert schema_errors("validate-report", doc) == [] and doc["valid"] is False and len(doc["archives"]) == 4
    assert result.stderr.splitlines()[-1] == "3 valid, 1 invalid"


def test_single_archive_output_has_no_verdict(tree: Path) -> None:
    result = run("inspect", "--json", tree / "a.zip")
    assert result.exit_code == 0 and result.stderr == "" and json.loads(result.stdout)["path"] == str(tree / "a.zip")
    result = run("validate", "--json", tree / "sub" / "junk.zip")
    assert result.exit_code == 1 and result.stderr == ""


def test_inspect_json_refuses_many(tree: Path) -> None:
    result = run("inspect", "--json", tree)
    assert result.exit_code == 2 and "--jsonl" in result.stderr
