"""Every ```python example of docs/api.md runs, in order, in one namespace, in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ptycho_bridge.ops.engines import availability
from tests._support import REPO

DOC = REPO / "docs" / "api.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_api_doc_has_an_example_per_function() -> None:
    text = "\n".join(snippets())
    for name in ("pb.open(", "pb.load_model(", "pb.save_torch(", "pb.save_keras("):
        assert name in text, name


def test_api_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [e for e in ("onnx", "torch", "keras") if availability(e)]
    if missing:
        pytest.skip(f"engines not installed: {missing}")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "api_doc"}
    for i, code in enumerate(snippets()):
        exec(compile(code, f"docs/api.md[python #{i + 1}]", "exec"), namespace)  # noqa: S102
