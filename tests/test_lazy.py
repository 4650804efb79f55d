"""``ptycho_bridge.lazy``: numpy bound at import, imported at first use, then the real module's names."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests._support import REPO


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_numpy_is_imported_at_first_attribute_use_and_then_is_numpy() -> None:
    out = _run("""
        import sys
        from ptycho_bridge.lazy import is_loaded, numpy as np
        before = "numpy" in sys.modules, is_loaded("numpy")
        arr = np.arange(3, dtype=np.float32)
        import numpy
        print(before, "numpy" in sys.modules, np.ndarray is numpy.ndarray, np.float32 is numpy.float32,
              isinstance(arr, numpy.ndarray), np.testing is numpy.testing, type(arr).__name__)
    """)
    assert out == "(False, False) True True True True True ndarray"


def test_a_second_importer_of_numpy_does_not_confuse_the_stand_in() -> None:
    """numpy imported by someone else first (h5py does): the stand-in still resolves to the same module."""
    out = _run("""
        import numpy
        from ptycho_bridge.lazy import numpy as np
        print(np.frombuffer(b"\\x01\\x00", dtype="<u2")[0], np.dtype is numpy.dtype)
    """)
    assert out == "1 True"
