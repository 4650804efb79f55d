"""Docs and CI for the CLI points of issue 15: extras named right, the README plot, a clean CI environment."""

from __future__ import annotations

import re

from tests._support import REPO


def test_user_guide_core_install_excludes_export_onnx() -> None:
    guide = (REPO / "docs" / "user-guide.md").read_text()
    core = next(line for line in guide.splitlines() if line.startswith("pip install -e .  "))
    assert "export-onnx" not in core
    assert 'pip install -e ".[reconstruct]"' in guide


def test_readme_shows_a_committed_parity_plot() -> None:
    readme = (REPO / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert images, "README shows no image"
    for rel in images:
        path = REPO / rel
        assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size < 400_000


def test_ci_always_builds_a_fresh_environment() -> None:
    script = (REPO / ".ci" / "run").read_text()
    assert script.index("rm -rf .venv") < script.index("bash scripts/test.sh")


def test_reconstruct_extra_is_in_all() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^reconstruct = \[.*"matplotlib', text, re.M)
    assert re.search(r'^all = \["ptycho-bridge\[[^\]]*reconstruct', text, re.M)
