"""The engine registry: one table maps an engine name to how it is imported, checked, built and run.

Why: ``run``, ``parity`` and the benchmarks must drive ONNX Runtime, PyTorch and Keras through
*one* code path, so that a difference between engines is a difference between engines and never
between three hand-written call sites. Every engine obeys the canonical convention
(:mod:`ptycho_bridge.spec.conventions`): input ``x_norm`` float32 ``[B, C, N, N]``, output the per-patch
object complex64 ``[B, Cout, N, N]``.

Frameworks are imported only inside :func:`load_engine`; :func:`availability` uses
``importlib.util.find_spec``, which locates a package without importing it, so listing what is
installed costs nothing and never drags TensorFlow or torch into a process that does not run them.

``golden`` (:data:`GOLDEN`) is not an engine: it names the expected output stored in an input file
(a fixture's ``golden.npz``); parity reports use it as the reference label.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import BridgeError, ConversionRefused
from ptycho_bridge.ops.extras import missing_packages, pip_hint
from ptycho_bridge.spec.expressible import Refusal
from ptycho_bridge.spec.network import NetworkSpec

GOLDEN = "golden"


class EngineUnavailable(BridgeError):
    """The engine's packages are not installed, or it cannot express this network (``reason`` says why)."""

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(f"{engine}: {reason}")
        self.engine = engine
        self.reason = reason


class EngineModule(Protocol):
    """What every engine module provides (``converters/<backend>/engine.py``).

    The module imports no framework at import time: ``REQUIRES`` and :meth:`refusals` are answered
    without one, and the framework is imported inside :meth:`build`.
    """

    NAME: str
    REQUIRES: tuple[str, ...]  # top-level packages that must be importable
    DESCRIPTION: str

    def refusals(self, spec: NetworkSpec) -> list[Refusal]: ...

    def build(self, spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None = None) -> Any: ...

    def run(self, handle: Any, x_norm: np.ndarray) -> np.ndarray: ...


# engine name -> the module implementing :class:`EngineModule`
ENGINES: dict[str, str] = {
    "onnx": "converters.onnx.engine",
    "torch": "converters.pytorch.engine",
    "keras": "converters.tensorflow.engine",
}
ENGINE_NAMES = tuple(ENGINES)
# engine name -> the pyproject extra that installs its packages (named in "not installed" reasons)
ENGINE_EXTRAS: dict[str, str] = {"onnx": "onnx", "torch": "torch", "keras": "tf"}


def engine_module(name: str) -> EngineModule:
    """The engine's protocol module (cheap: no framework is imported)."""
    return importlib.import_module(ENGINES[name])  # type: ignore[return-value]


def parse_engines(text: str) -> list[str]:
    """``"onnx,torch"`` → ``["onnx", "torch"]``; unknown names raise ``ValueError`` listing the valid ones."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ENGINES]
    if bad or not names:
        raise ValueError(f"unknown engine(s) {bad or [text]}; choose from {', '.join(ENGINE_NAMES)}")
    return list(dict.fromkeys(names))


def availability(name: str) -> str | None:
    """``None`` when the engine's packages are installed, else the reason it is not (no import done)."""
    missing = missing_packages(engine_module(name).REQUIRES)
    if not missing:
        return None
    return f"not installed: {', '.join(missing)} ({pip_hint(ENGINE_EXTRAS.get(name, 'all'))})"


@dataclass
class LoadedEngine:
    """A built engine: ``run(x_norm)`` → complex64 ``[B, Cout, N, N]``, optionally in batches."""

    name: str
    spec: NetworkSpec
    module: EngineModule
    handle: Any

    def run(self, x_norm: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        outs = list(self.run_batches(x_norm, batch_size=batch_size))
        if not outs:
            return np.zeros((0, self.spec.channels_out, self.spec.N, self.spec.N), np.complex64)
        return np.concatenate(outs, axis=0)

    def run_batches(self, x_norm: np.ndarray, *, batch_size: int | None = None) -> Iterator[np.ndarray]:
        """Yield the output batch by batch (callers drive progress bars from this)."""
        x = np.asarray(x_norm, dtype=np.float32)
        check_input(self.spec, x)
        step = len(x) if batch_size is None else int(batch_size)
        if step < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        for start in range(0, len(x), step):
            out = self.module.run(self.handle, x[start : start + step])
            yield np.asarray(out).astype(np.complex64, copy=False)


def check_input(spec: NetworkSpec, x: np.ndarray) -> None:
    """The canonical input must be ``[B, channels_in, N, N]`` for this spec."""
    want = (spec.channels_in, spec.N, spec.N)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ConversionRefused(
            f"input has shape {list(x.shape)} but this network takes [B, {want[0]}, {want[1]}, {want[2]}] "
            "(canonical x_norm, NCHW)",
            field="input",
        )


def load_engine(name: str, spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, threads: int | None = None,
                options: Mapping[str, Any] | None = None) -> LoadedEngine:
    """Import the engine's module and build it; :class:`EngineUnavailable` names why it cannot run.

    ``options``: engine-specific keywords for its ``build`` (the ONNX engine's ``graph_source``: the graph cache).
    """
    if name not in ENGINES:
        raise EngineUnavailable(name, f"unknown engine; choose from {', '.join(ENGINE_NAMES)}")
    reason = availability(name)
    if reason:
        raise EngineUnavailable(name, reason)
    module = engine_module(name)
    found = module.refusals(spec)
    if found:  # the engine cannot express this network (e.g. Keras has no CBAM)
        raise EngineUnavailable(name, f"cannot build this network: {found[0].reason}")
    try:
        handle = module.build(spec, tensors, threads, **dict(options or {}))
    except BridgeError as exc:  # tensors that do not fit the spec
        raise EngineUnavailable(name, f"cannot build this network: {exc}") from exc
    return LoadedEngine(name, spec, module, handle)


__all__ = [
    "ENGINES",
    "ENGINE_EXTRAS",
    "ENGINE_NAMES",
    "GOLDEN",
    "EngineModule",
    "EngineUnavailable",
    "LoadedEngine",
    "availability",
    "check_input",
    "engine_module",
    "load_engine",
    "parse_engines",
]
