"""``load_model``: an archive → a ready-to-run network, one call signature for every engine.

Why: reading an archive and building an engine were two internal steps (``read_archive`` then an
engine's ``build``) that a user had to find in the source. :class:`Runnable` wraps the engine
registry's :class:`~ptycho_bridge.ops.engines.LoadedEngine`, so no engine code is repeated here: the
same strict build (every tensor used, shapes checked), eval mode, CPU, and the same canonical
convention (input ``x_norm`` float32 ``[B, C, N, N]``, output complex64 ``[B, Cout, N, N]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.model import BridgeArchive
from ptycho_bridge.ops.engines import ENGINE_NAMES, EngineUnavailable, LoadedEngine, engine_module, load_engine
from ptycho_bridge.spec.network import NetworkSpec


@dataclass
class Runnable:
    """A built network: :meth:`predict`, plus the framework object (``module`` / ``keras_model`` / ``session``)."""

    engine: str
    spec: NetworkSpec
    archive: BridgeArchive
    loaded: LoadedEngine

    def predict(self, amplitude: np.ndarray, positions: np.ndarray | None = None, *,
                batch_size: int | None = None) -> np.ndarray:
        """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → the per-patch object complex64 ``[B, Cout, N, N]``.

        ``positions`` (``[B, ...]``) is accepted so every caller can pass what it has; the per-patch
        object does not depend on it (upstream's ``forward_predict`` ignores it too), so only its
        batch size is checked. ``batch_size`` splits the batch (results equal up to rounding).
        """
        x = np.asarray(amplitude, dtype=np.float32)
        if positions is not None and (np.ndim(positions) < 1 or np.shape(positions)[0] != x.shape[0]):
            raise ValueError(f"positions has {np.shape(positions)[:1]} rows, the amplitude batch {x.shape[:1]}")
        return self.loaded.run(x, batch_size=batch_size)

    def _handle(self, engine: str, what: str) -> Any:
        if self.engine != engine:
            raise AttributeError(f"{what} exists for engine={engine!r}; this model was loaded with engine={self.engine!r}")
        return self.loaded.handle

    @property
    def module(self) -> Any:
        """The ``torch.nn.Module`` (engine ``torch``), in eval mode on CPU."""
        return self._handle("torch", "module")

    @property
    def keras_model(self) -> Any:
        """The Keras model (engine ``keras``): input ``x_norm`` NHWC, output the object NHWC."""
        return self._handle("keras", "keras_model")

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (engine ``onnx``)."""
        return self._handle("onnx", "session")


def load_model(
    path: str | os.PathLike[str],
    engine: str = "onnx",
    model: str = "diffraction_to_obj",
    *,
    threads: int | None = None,
) -> Runnable:
    """Read ``path`` (any supported era) and build ``model`` with ``engine`` (``onnx``, ``torch``, ``keras``).

    Raises :class:`ConversionRefused` naming the spec field when the engine cannot express the
    network (e.g. ``cbam_encoder`` for Keras), :class:`~ptycho_bridge.ops.engines.EngineUnavailable`
    when its packages are not installed, and the archive errors of :func:`read_archive`.
    """
    if engine not in ENGINE_NAMES:
        raise EngineUnavailable(engine, f"unknown engine; choose from {', '.join(ENGINE_NAMES)}")
    arch = read_archive(path)
    if model not in arch.models:
        raise ConversionRefused(f"archive has no model {model!r}; it holds {sorted(arch.models)}", field="model",
                                value=model)
    entry = arch.models[model]
    if entry.spec is None:
        raise ConversionRefused(f"model {model!r} holds no weights (a sentinel placeholder)", field="model",
                                value=model)
    found = engine_module(engine).refusals(entry.spec)
    if found:
        raise ConversionRefused(f"engine {engine!r} cannot build this network: {found[0].reason}",
                                field=found[0].field, value=found[0].value)
    return Runnable(engine, entry.spec, arch, load_engine(engine, entry.spec, entry.tensors, threads=threads))


__all__ = ["Runnable", "load_model"]
