"""Lean start-up: each command, in a fresh interpreter, imports only what its output needs.

Why a subprocess: ``sys.modules`` of the test process is polluted by every other test. Per path, the
modules listed are the ones that path has been made not to need (``docs/performance.md``): ``inspect``
builds no array (tensors and probes are :class:`~ptycho_bridge.io.deferred.DeferredArray`) and reads
HDF5 metadata in pure Python (:mod:`ptycho_bridge.io.h5meta`), so numpy and h5py are imported only where
the era's metadata needs float32 arithmetic and tensor values (the SavedModel era's input divisor and
probe check); jsonschema stays on the bridge-2 path (its manifest is untrusted input that the schema bounds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ptycho_bridge.io.safezip import SafeZip
from tests._support import FIXTURES_DIR, PTYCHODUS_DIR, REPO

FRAMEWORKS = ("torch", "tensorflow", "keras", "onnx", "onnxruntime", "scipy", "matplotlib", "dill", "dask", "distributed")
HEAVY = ("numpy", "h5py", "jsonschema", "google.protobuf", "rich")


def imported(args: list[str]) -> tuple[int, list[str]]:
    """Exit code of ``ptycho-bridge ARGS`` run in a fresh interpreter, and the watched modules it imported."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from ptycho_bridge.cli import main
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                main({args!r}, standalone_mode=False)
            rc = 0
        except SystemExit as exc:
            rc = exc.code or 0
        watched = {FRAMEWORKS + HEAVY!r}
        print(json.dumps([rc, sorted(m for m in watched if m in sys.modules)]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rc, mods = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, mods


def _package_is_lazy() -> bool:
    code = "import sys, ptycho_bridge; print('numpy' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout.strip() == "False"


@pytest.mark.parametrize("args", [["--help"], ["schema", "--list"], ["schema", "manifest"]], ids=" ".join)
def test_help_and_schema_import_nothing_heavy(args: list[str]) -> None:
    if not _package_is_lazy():
        pytest.skip("`import ptycho_bridge` still imports numpy here: the lazy public API (__getattr__) is not merged")
    rc, mods = imported(args)
    assert rc == 0 and mods == [], mods


# era -> (fixture, modules the inspect path must not import)
NO_ARRAYS = ("numpy", "h5py", "jsonschema", "google.protobuf", "rich")
INSPECT = {
    "torch-bundle-2": (FIXTURES_DIR / "torch_N64_gs1" / "wts.h5.zip", NO_ARRAYS),
    "lightning-ckpt": (FIXTURES_DIR / "torch_N64_gs1" / "lightning.ckpt", NO_ARRAYS),
    "lightning-ckpt (Ptychodus torchapi)": (PTYCHODUS_DIR / "case_N64_gs1" / "model.ckpt", NO_ARRAYS),
    "tf-modelmanager-1": (FIXTURES_DIR / "tf_N64_gs1" / "wts.h5.zip", NO_ARRAYS),  # HDF5 metadata: io.h5meta
    "tf-modelmanager-1 (N128)": (FIXTURES_DIR / "tf_N128_gs1" / "wts.h5.zip", NO_ARRAYS),
}


@pytest.mark.parametrize("era", sorted(INSPECT))
def test_inspect_json_imports_only_what_the_era_needs(era: str) -> None:
    path, forbidden = INSPECT[era]
    if not path.exists():
        pytest.skip(f"fixture not found at {path}")
    with SafeZip(path, label=path.name) as zf:  # the fixture is the era it claims (else the test proves nothing)
        assert ("manifest.dill" in zf.names()) == (not era.startswith("lightning-ckpt"))
    rc, mods = imported(["inspect", "--json", str(path)])
    assert rc == 0
    assert [m for m in mods if m in forbidden + FRAMEWORKS] == []


@pytest.mark.skipif(not FIXTURES_DIR.is_dir(), reason=f"fixtures not found at {FIXTURES_DIR}")
@pytest.mark.parametrize("case", ["tf_N64_gs1", "torch_N64_gs1"])
def test_inspect_of_bridge2_builds_no_array(case: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """bridge-2: the probe (from tf_N64_gs1, an HDF5 dataset) is reported from params.json's checked
    reference, so neither numpy nor h5py is imported; jsonschema is (the manifest is validated)."""
    out = tmp_path / "b2.zip"
    rc, _ = imported(["migrate", str(FIXTURES_DIR / case / "wts.h5.zip"), "-o", str(out)])
    assert rc == 0 and out.exists()
    rc, mods = imported(["inspect", "--json", str(out)])
    assert rc == 0
    assert [m for m in mods if m in ("numpy", "h5py", "google.protobuf", "rich") + FRAMEWORKS] == []
