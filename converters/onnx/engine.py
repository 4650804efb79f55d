"""The ONNX Runtime engine behind the one engine protocol (:mod:`ptycho_bridge.ops.engines`), and its sessions.

Why a separate module: the registry reads ``NAME``/``REQUIRES``/``refusals`` without importing onnx
or onnxruntime; they are imported only when :func:`build` (or a session function) runs. The graph
comes from :func:`converters.onnx.export.build_onnx`; session options (threads, no spinning), the
feeds and the checks on what is fed (:func:`run_session`) are set here, so ``run``, parity and the
benchmarks share one way of running an exported model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.onnx.export import build_onnx, model_bytes
from converters.onnx.layout import INPUT_NAME, OUTPUT_NAME, POSITIONS_NAME, TRIMMED_NAME
from ptycho_bridge.spec import expressible
from ptycho_bridge.spec.conventions import ri_to_complex
from ptycho_bridge.spec.expressible import Refusal
from ptycho_bridge.spec.network import NetworkSpec
from ptycho_bridge.spec.reassembly import BATCH_COLLAPSE_PATCHES

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    import onnxruntime

NAME = "onnx"
REQUIRES = ("onnx", "onnxruntime")
DESCRIPTION = "ONNX graph built from the canonical tensors, run by ONNX Runtime (CPU)"


def refusals(spec: NetworkSpec) -> list[Refusal]:
    """Every reason this engine cannot run ``spec`` (empty: it can)."""
    return expressible.refusals(spec, "engine:onnx")


def build(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], threads: int | None = None, *,
          graph_source: Callable[[Callable[[], bytes]], bytes] | None = None) -> Any:
    """An ONNX Runtime session over the graph built from ``spec`` and ``tensors``.

    ``graph_source(build)`` returns the graph's bytes, calling ``build`` only when it has none (the graph
    cache, :mod:`ptycho_bridge.ops.graph_cache`): a cached graph is handed to ONNX Runtime without
    importing ``onnx``.
    """
    def export() -> bytes:
        return model_bytes(build_onnx(spec, tensors))

    return make_session(graph_source(export) if graph_source is not None else export(), threads=threads)


# samples per ONNX Runtime call inside :func:`run`. On a quiet 2-core box (ceiling mode, 7 rounds, same run)
# 16-sample calls gave the most patterns/s: tf_N64_gs1 619 (64-sample calls 608, 4-sample calls 529),
# tf_N64_gs2 2,294 (2,222 / 1,981), tf_N128_gs1 252 (242 / 246); 4-sample calls had looked best only on a
# loaded box. 16 also keeps ONNX Runtime's arena at a quarter of a 64-sample call's (docs/performance.md).
MICRO_BATCH = 16


def run(handle: Any, x_norm: np.ndarray) -> np.ndarray:
    """Canonical ``x_norm`` float32 ``[B, C, N, N]`` → complex64 ``[B, Cout, N, N]``, :data:`MICRO_BATCH` samples a call."""
    x = np.asarray(x_norm, dtype=np.float32)
    if x.shape[0] <= MICRO_BATCH:
        return run_session(handle, x)
    return np.concatenate([run_session(handle, x[i:i + MICRO_BATCH]) for i in range(0, x.shape[0], MICRO_BATCH)])


def session_options(threads: int | None) -> "onnxruntime.SessionOptions":
    """ORT options measured best on small CPUs (docs/performance.md, "Engines").

    ORT_ENABLE_ALL, sequential execution, ``intra_op_num_threads = threads`` (default: all cores)
    and **no spinning**: idle ORT workers otherwise busy-wait between the graph's many small ops,
    which on a shared 2-core box steals the core another process needs (one loaded run: 1.3-2.7x
    faster without; a quieter run: within noise either way).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads is not None else (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def make_session(
    model: "onnx.ModelProto | bytes | str | os.PathLike[str]", *, threads: int | None = None
) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime CPU session with :func:`session_options`; reusable across calls (run, parity, benchmarks)."""
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes(model), sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


def run_session(
    session: "onnxruntime.InferenceSession", x_norm: np.ndarray, *, positions: np.ndarray | None = None
) -> np.ndarray:
    """Run a session: complex64 ``[B, Cout, N, N]``, or ``[B, N, N, 1]`` when it has the reassembly stage."""
    x = np.ascontiguousarray(np.asarray(x_norm, dtype=np.float32))
    names = {i.name for i in session.get_inputs()}
    feeds: dict[str, np.ndarray] = {INPUT_NAME: x}
    if POSITIONS_NAME in names:
        if positions is None:
            raise ValueError("this model has the reassembly stage: pass positions [B, 1, 2, C]")
        pos = np.ascontiguousarray(np.asarray(positions, dtype=np.float32))
        if pos.ndim != 4 or pos.shape[0] != x.shape[0] or pos.shape[1:3] != (1, 2) or pos.shape[3] != x.shape[1]:
            raise ValueError(f"positions must be [B, 1, 2, C] = {[x.shape[0], 1, 2, x.shape[1]]}, got {list(pos.shape)}")
        if x.shape[0] * x.shape[1] >= BATCH_COLLAPSE_PATCHES:
            raise ValueError(
                f"B·C = {x.shape[0] * x.shape[1]} >= {BATCH_COLLAPSE_PATCHES}: upstream TF takes its "
                "batch-collapsing path there, which the ONNX reassembly does not reproduce; use smaller batches"
            )
        feeds[POSITIONS_NAME] = pos
        (out,) = session.run([TRIMMED_NAME], feeds)
    else:
        if positions is not None:
            raise ValueError("positions given but this model has no reassembly stage (build with reassembly=True)")
        (out,) = session.run([OUTPUT_NAME], feeds)
    return ri_to_complex(out)


def run_onnx(
    model: "onnx.ModelProto | bytes | str | os.PathLike[str]",
    x_norm: np.ndarray,
    *,
    positions: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Build a session for ``model`` and run it once (see :func:`run_session` for the outputs)."""
    return run_session(make_session(model, threads=threads), x_norm, positions=positions)

