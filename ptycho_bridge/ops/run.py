"""Run an archive's network on a batch of canonical inputs, chunk by chunk, with TF's reassembly per chunk.

Why here and not in the CLI: chunking decides the result where TF's reassembly is involved (its
batch-mean centring is per upstream call, so one chunk = one call), and a batch of B·C ≥ 64 patches
would take upstream's batch-collapsing path. Library callers and ``ptycho-bridge run`` must share
that rule; the CLI only adds the progress bar and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.ops.engines import load_engine
from ptycho_bridge.ops.parity import ArchiveUnderTest, ParityInput, trimmed_object
from ptycho_bridge.spec.reassembly import BATCH_COLLAPSE_PATCHES


@dataclass
class RunPlan:
    """What one run does: the chunk size and whether each chunk is also reassembled (``trimmed_object``)."""

    batch_size: int
    want_trimmed: bool


def plan_run(aut: ArchiveUnderTest, inp: ParityInput, batch_size: int) -> RunPlan:
    """Check the chunk size against upstream's batch-collapse threshold before any work."""
    spec = aut.spec
    want_trimmed = inp.positions_tf is not None and spec.object_big and spec.padded_size is not None
    chunk = min(batch_size, len(inp.x_norm))  # one chunk = one upstream call for the reassembly
    if want_trimmed and chunk * spec.channels_in >= BATCH_COLLAPSE_PATCHES:
        raise ConversionRefused(
            f"batch size {chunk} × C={spec.channels_in} >= {BATCH_COLLAPSE_PATCHES}: upstream TF "
            f"batch-collapses there; use --batch-size <= {(BATCH_COLLAPSE_PATCHES - 1) // spec.channels_in}",
            field="batch_size",
        )
    return RunPlan(batch_size=batch_size, want_trimmed=want_trimmed)


def run_archive(
    aut: ArchiveUnderTest,
    inp: ParityInput,
    engine: str,
    plan: RunPlan,
    *,
    progress: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]] = lambda chunks: chunks,
) -> dict[str, np.ndarray]:
    """``object`` complex64 ``[B, Cout, N, N]`` and, when planned, ``trimmed_object`` ``[B, N, N, 1]``."""
    spec = aut.spec
    runner = load_engine(engine, spec, aut.tensors)
    objects, trimmed = [], []
    chunks = runner.run_batches(inp.x_norm, batch_size=plan.batch_size)
    for start, obj in zip(range(0, len(inp.x_norm), plan.batch_size), progress(chunks)):
        objects.append(obj)
        if plan.want_trimmed:
            assert inp.positions_tf is not None
            trimmed.append(trimmed_object(obj, inp.positions_tf[start : start + len(obj)], spec,
                                          centre=aut.reassembly_centring))
    result = {"object": np.concatenate(objects, axis=0) if objects else
              np.zeros((0, spec.channels_out, spec.N, spec.N), np.complex64)}
    if plan.want_trimmed and trimmed:
        result["trimmed_object"] = np.concatenate(trimmed, axis=0)
    return result
