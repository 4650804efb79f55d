"""pytest fixtures; the helpers themselves live in :mod:`tests._support`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._support import FIXTURES_DIR, PTYCHODUS_DIR

# The CLI's safety net (cli/util.py guarded) turns unexpected ValueError/TypeError/... into one error
# line; in tests they must stay tracebacks, so a missing root-cause fix fails loudly (issue 12).
os.environ.setdefault("PTYCHO_BRIDGE_STRICT_ERRORS", "1")
# The ONNX graph cache (ops/graph_cache.py) must never write into the user's cache folder from tests:
# one throw-away folder per test session (tests that check the cache pass their own folder).
if "PTYCHO_BRIDGE_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["PTYCHO_BRIDGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ptycho-bridge-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PTYCHO_BRIDGE_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The upstream fixture archives (``<case>/wts.h5.zip``, ``golden.npz`` …); skips when absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIXTURES_DIR}")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def ptychodus_case() -> Path:
    """The Ptychodus 1.7 checkpoint fixture folder (``model.ckpt``, ``forward_golden.npz``); skips when absent."""
    case = PTYCHODUS_DIR / "case_N64_gs1"
    if not (case / "model.ckpt").is_file():
        pytest.skip(f"ptychodus-torch fixture not found at {case}")
    return case
