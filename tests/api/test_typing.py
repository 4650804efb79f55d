"""The public API's type hints are accepted by mypy (issue 13's acceptance); skipped when mypy is absent."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests._support import REPO


def test_public_api_type_checks() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    files = ["ptycho_bridge/__init__.py", "ptycho_bridge/api/", "ptycho_bridge/ops/pack.py",
             "ptycho_bridge/ops/torch_archive.py", "ptycho_bridge/ops/keras_archive.py"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", os.devnull, "--ignore-missing-imports",
         "--follow-imports=silent", *files],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
