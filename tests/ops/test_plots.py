"""``ops.plots``: the figure of a comparison (amplitude, phase, |difference| maps) and the worst patch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptycho_bridge.ops import extras
from ptycho_bridge.ops.plots import Panel, require_plotting, save_figure, worst_patch


def test_worst_patch_finds_the_largest_difference() -> None:
    ref = np.ones((3, 2, 8, 8), np.complex64)
    act = ref.copy()
    act[2, 1, 4, 4] += 0.5
    assert worst_patch(act, ref) == (2, 1)


def test_save_figure_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    z = np.exp(1j * np.linspace(0, 3, 64)).reshape(8, 8)
    out = tmp_path / "f.png"
    assert save_figure(out, [Panel("a", z, z * 1.01), Panel("b", z)], title="t") == 2
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_require_plotting_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "missing_packages", lambda pkgs: list(pkgs))
    with pytest.raises(extras.MissingDependency) as info:
        require_plotting()
    assert str(info.value) == '--plot needs matplotlib, which is not installed: pip install "ptycho-bridge[reconstruct]"'
