"""Optional dependencies: which extra provides what, and one refusal that names the ``pip install``.

Why: a core install (``pip install ptycho-bridge``, what ``demo.sh`` uses) has neither ONNX, torch,
TensorFlow nor matplotlib. A command that needs one must say so *before any work*, in one line a
person can paste, instead of ending in a ``ModuleNotFoundError`` traceback. Packages are located
with ``importlib.util.find_spec`` (nothing is imported), looked up at call time so tests can
simulate an absent package.
"""

from __future__ import annotations

import importlib.util

from ptycho_bridge.errors import BridgeError

# extra name in pyproject.toml -> the top-level packages it installs (the ones the code imports)
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime"),
    "torch": ("torch",),
    "tf": ("tensorflow",),
    "reconstruct": ("scipy", "matplotlib", "tifffile", "skimage"),  # skimage: scikit-image
    "distributed": ("dask", "distributed"),
}


class MissingDependency(BridgeError):
    """An optional package a command needs is not installed; the message names the extra to install."""

    def __init__(self, what: str, missing: list[str], extra: str) -> None:
        self.missing = missing
        self.extra = extra
        super().__init__(f"{what} needs {', '.join(missing)}, which is not installed: {pip_hint(extra)}")


def pip_hint(extra: str) -> str:
    """The exact command that installs ``extra``: ``pip install "ptycho-bridge[onnx]"``."""
    return f'pip install "ptycho-bridge[{extra}]"'


def missing_packages(packages: tuple[str, ...] | list[str]) -> list[str]:
    """The packages of ``packages`` that cannot be imported (located without importing them)."""
    out = []
    for pkg in packages:
        try:
            found = importlib.util.find_spec(pkg) is not None
        except (ImportError, ValueError):  # a broken or half-removed install counts as absent
            found = False
        if not found:
            out.append(pkg)
    return out


def require(extra: str, what: str, packages: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingDependency` unless every package of ``extra`` (or ``packages``) is installed."""
    missing = missing_packages(EXTRAS[extra] if packages is None else packages)
    if missing:
        raise MissingDependency(what, missing, extra)
