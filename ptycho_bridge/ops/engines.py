"""The engine registry: one table maps an engine name to how it is imported, checked, built and run.

Why: ``run``, ``parity`` and the benchmarks must drive ONNX Runtime, PyTorch and Keras through
*one* code path, so that a difference between engines is a difference between engines and never
between three hand-written call sites. Every engine obeys the canonical convention
(:mod:`ptycho_bridge.conventions`): input ``x_norm`` float32 ``[B, C, N, N]``, output the per-patch
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
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ptycho_bridge.errors import BridgeError, ConversionRefused
from ptycho_bridge.spec.network import NetworkSpec

GOLDEN = "golden"


class EngineUnavailable(BridgeError):
    """The engine's packages are not installed, or it cannot express this network (``reason`` says why)."""

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(f"{engine}: {reason}")
        self.engine = engine
        self.reason = reason


# -- per-engine build / run functions (the module is passed in, already imported) -----------------
def _onnx_build(mod: Any, spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None) -> Any:
    return mod.make_session(mod.build_onnx(spec, tensors), threads=threads)


def _onnx_run(mod: Any, session: Any, x_norm: np.ndarray) -> np.ndarray:
    return mod.run_session(session, x_norm)


def _torch_build(mod: Any, spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None) -> Any:
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    return mod.build_module(spec, tensors)


def _torch_run(mod: Any, module: Any, x_norm: np.ndarray) -> np.ndarray:
    return mod.run(module, x_norm)


def _keras_build(mod: Any, spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None) -> Any:
    if threads is not None:
        tf = mod._tf().tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TF already initialised its thread pools in this process
            pass
    return mod.build_keras_model(spec, tensors, intensity_scale=None)


def _keras_run(mod: Any, model: Any, x_norm: np.ndarray) -> np.ndarray:
    return mod.run_core(model, x_norm)


@dataclass(frozen=True)
class EngineDef:
    """One row of the registry."""

    name: str
    module: str  # imported lazily by load_engine
    requires: tuple[str, ...]  # top-level packages that must be importable
    build: Callable[[Any, NetworkSpec, Mapping[str, np.ndarray], int | None], Any]
    run: Callable[[Any, Any, np.ndarray], np.ndarray]
    description: str


ENGINES: dict[str, EngineDef] = {
    e.name: e
    for e in (
        EngineDef("onnx", "converters.onnx.export", ("onnx", "onnxruntime"), _onnx_build, _onnx_run,
                  "ONNX graph built from the canonical tensors, run by ONNX Runtime (CPU)"),
        EngineDef("torch", "converters.pytorch.network", ("torch",), _torch_build, _torch_run,
                  "PyTorch eager module (converters/pytorch.py)"),
        EngineDef("keras", "converters.tensorflow.keras_model", ("tensorflow",), _keras_build, _keras_run,
                  "Keras 3 / TensorFlow core model (converters/tensorflow.py)"),
    )
}
ENGINE_NAMES = tuple(ENGINES)


def parse_engines(text: str) -> list[str]:
    """``"onnx,torch"`` → ``["onnx", "torch"]``; unknown names raise ``ValueError`` listing the valid ones."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ENGINES]
    if bad or not names:
        raise ValueError(f"unknown engine(s) {bad or [text]}; choose from {', '.join(ENGINE_NAMES)}")
    return list(dict.fromkeys(names))


def availability(name: str) -> str | None:
    """``None`` when the engine's packages are installed, else the reason it is not (no import done)."""
    missing = [pkg for pkg in ENGINES[name].requires if importlib.util.find_spec(pkg) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


@dataclass
class LoadedEngine:
    """A built engine: ``run(x_norm)`` → complex64 ``[B, Cout, N, N]``, optionally in batches."""

    name: str
    spec: NetworkSpec
    _mod: Any
    _handle: Any

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
            out = ENGINES[self.name].run(self._mod, self._handle, x[start : start + step])
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


def load_engine(name: str, spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, threads: int | None = None) -> LoadedEngine:
    """Import the engine's module and build it; :class:`EngineUnavailable` names why it cannot run."""
    if name not in ENGINES:
        raise EngineUnavailable(name, f"unknown engine; choose from {', '.join(ENGINE_NAMES)}")
    row = ENGINES[name]
    reason = availability(name)
    if reason:
        raise EngineUnavailable(name, reason)
    mod = importlib.import_module(row.module)
    try:
        handle = row.build(mod, spec, tensors, threads)
    except BridgeError as exc:  # the engine cannot express this network (e.g. Keras has no CBAM)
        raise EngineUnavailable(name, f"cannot build this network: {exc}") from exc
    return LoadedEngine(name, spec, mod, handle)


__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "GOLDEN",
    "EngineDef",
    "EngineUnavailable",
    "LoadedEngine",
    "availability",
    "check_input",
    "load_engine",
    "parse_engines",
]
