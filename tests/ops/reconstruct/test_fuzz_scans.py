"""The scan fuzzer's CI slice (issue 23): a few hundred seeded mutations of .npz and HDF5 scans, no finding.

``scripts/fuzz.py --mode scans`` is the long run (docs/security.md, "Scans"); this runs 300 cases in a subprocess
so a libhdf5 crash in a worker cannot take pytest down, and checks the summary it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests._support import REPO


def test_scan_fuzzer_slice_has_no_findings(tmp_path: Path) -> None:
    out = tmp_path / "findings"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "fuzz.py"), "--mode", "scans", "--cases", "300",
                           "--seconds", "240", "--jobs", "1", "--seed", "23", "--findings", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary["mode"] == "scans" and summary["cases"] == 300
    assert summary["unique_findings"] == 0 and not summary["hangs"] and not summary["crashed_workers"]
    assert set(summary["per_target"]) >= {"h5:<whole archive>", "h5c:<whole archive>", "npzd:diffraction.npy"}
