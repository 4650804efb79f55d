"""The layering rules of docs/architecture.md, checked on the source so they cannot erode silently.

- imports point downwards: core (io, spec, formats, model, errors, schema) never imports converters,
  ops or cli; converters never import ops or cli;
- no private name (leading underscore) is imported from another module;
- project modules are imported at module top; the only function-local ones are the engines' lazy
  imports of their framework-bound module (listed below, each with its reason);
- numpy is bound through ``ptycho_bridge.lazy`` (imported on first use), never by a module-level
  ``import numpy``, so that reading an archive's metadata imports no numpy (issue 16);
- no module exceeds 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._support import REPO

PACKAGES = ("ptycho_bridge", "converters")
CORE = ("ptycho_bridge.io", "ptycho_bridge.spec", "ptycho_bridge.formats", "ptycho_bridge.model",
        "ptycho_bridge.errors", "ptycho_bridge.schema", "ptycho_bridge.lazy")
UPPER = ("ptycho_bridge.ops", "ptycho_bridge.cli")
# function-local project imports that keep a framework lazy: module -> imported modules allowed
LAZY_ALLOWED = {
    "converters.pytorch.engine": {"converters.pytorch.network"},  # network.py imports torch at module level
}
MAX_LINES = 500


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append((".".join(parts), path))
    return out


MODULES = _modules()


def _project_imports(tree: ast.AST) -> list[tuple[ast.ImportFrom | ast.Import, bool]]:
    """Every import of a project module, with whether it sits at module level."""
    found = []
    body = list(getattr(tree, "body", []))
    for node in list(body):  # ``if TYPE_CHECKING:`` imports are module-level (for type checkers only)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            body.extend(node.body)
    top = set(id(n) for n in body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found.append((node, id(node) in top))
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in node.names):
            found.append((node, id(node) in top))
    return found


def _targets(node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        assert node.module is not None
        return [node.module]
    return [a.name for a in node.names]


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_layering_private_names_and_top_level_imports(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node, at_top in _project_imports(tree):
        for target in _targets(node):
            where = f"{path.relative_to(REPO)}:{node.lineno} imports {target}"
            if module.startswith(CORE):
                assert not target.startswith(("converters", *UPPER)), f"core must not import upward: {where}"
            if module.startswith("converters"):
                assert not target.startswith(UPPER), f"converters must not import ops/cli: {where}"
            if not at_top:
                assert target in LAZY_ALLOWED.get(module, set()), f"function-local project import: {where}"
        if isinstance(node, ast.ImportFrom):
            private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            assert not private, f"{path.relative_to(REPO)}:{node.lineno} imports private name(s) {private}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_module_size(module: str, path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines (limit {MAX_LINES}): split it by job"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_numpy_is_bound_lazily(module: str, path: Path) -> None:
    """A module-level ``import numpy`` (outside ``if TYPE_CHECKING:``) would put numpy back on every
    path that imports the module; ``from ptycho_bridge.lazy import numpy as np`` binds the same name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        eager = [n for n in names if n == "numpy" or n.startswith("numpy.")]
        assert not eager, f"{path.relative_to(REPO)}:{node.lineno} imports numpy at module level; use ptycho_bridge.lazy"
