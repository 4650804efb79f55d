"""ONNX export: build upstream's ``diffraction_to_obj`` as an ONNX graph, check it and save it.

Why this module exists: an ONNX export is the one engine that needs neither TensorFlow nor PyTorch,
so it is what ``export-onnx`` writes and what parity checks can always run. :func:`build_onnx` is
the public entry point: it refuses what cannot be expressed exactly, lets
:class:`~converters.onnx.network.Network` emit the network and, on request,
:func:`~converters.onnx.reassembly.emit_reassembly` TF's reassembly stage into one
:class:`~converters.onnx.graph.GraphBuilder`, records the conventions in ``metadata_props`` and runs
the ONNX checker. Running the graph is :mod:`converters.onnx.engine`'s job. Only ``onnx`` (and
numpy) is imported, and only when a function of this module runs.

Graph contract: :mod:`converters.onnx.layout`. With ``reassembly=True`` the extra output
reproduces ``ReassemblePatchesLayer`` + ``TrimReconstructionLayer`` (per-sample path only, §1.5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.onnx.graph import GraphBuilder, OnnxExportError
from converters.onnx.layout import (
    BATCH_DIM,
    INPUT_NAME,
    MIN_OPSET,
    OUTPUT_NAME,
    POSITIONS_NAME,
    TRIMMED_NAME,
)
from converters.onnx.network import Network
from converters.onnx.reassembly import emit_reassembly
from ptycho_bridge.errors import SpecError
from ptycho_bridge.io.atomic import atomic_write
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.network import NetworkSpec, check_tensors, resolve_padded_size
from ptycho_bridge.spec.reassembly import BATCH_COLLAPSE_PATCHES

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx


def _check_spec(spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> None:
    """Refuse, with the reason, every variant this builder cannot reproduce exactly."""
    try:
        spec.check()
    except SpecError as exc:  # the head invariants have always been this exporter's refusals
        if exc.field not in ("narrow_head", "outer_tensors"):
            raise
        raise OnnxExportError(exc.reason, field=exc.field) from None
    require(spec, "engine:onnx", error=lambda r: OnnxExportError(r.reason, field=r.field, value=r.value))
    try:  # extra tensors are vetted by _check_batch_norm_coverage once the graph is built
        check_tensors(spec, {n: tuple(np.shape(t)) for n, t in tensors.items()}, member="tensors", check_extra=False)
    except SpecError as exc:
        raise OnnxExportError(exc.reason) from None


def _check_batch_norm_coverage(net: Network) -> None:
    """Every batch-norm tensor must have been consumed: else a BN sits where the graph has none.

    Also catches ``.bn`` tensors under a spec that says ``batch_norm=False``, and torch BN modules the
    canonical table does not name (they arrive as ``extra.…``), rather than dropping them silently.
    """
    stray = sorted(n for n in net.tensors if ".bn" in n and n not in net.used)
    if stray:
        raise OnnxExportError(
            f"batch-norm tensor(s) {stray[:4]} sit where the ONNX builder applies no BatchNormalization; "
            "refusing rather than silently dropping them"
        )


def build_onnx(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    *,
    opset: int = MIN_OPSET,
    metadata: Mapping[str, str] | None = None,
    reassembly: bool = False,
    padded_size: int | None = None,
    reassembly_centre: bool = True,
) -> "onnx.ModelProto":
    """The ``diffraction_to_obj`` core graph (and, with ``reassembly``, TF's reassembly stage).

    ``tensors`` are canonical (OIHW conv weights); ``metadata`` entries (e.g. source sha256, era)
    are added to ``metadata_props`` beside the opset, the spec JSON and the I/O conventions.
    ``padded_size`` overrides ``spec.padded_size`` for the reassembly canvas (torch specs carry none).
    ``reassembly_centre=False`` builds the reassembly without batch-mean centring of the offsets
    (the source model's :attr:`~ptycho_bridge.model.ModelEntry.reassembly_centring`).
    Raises :class:`OnnxExportError` for any variant that cannot be expressed exactly.
    """
    import onnx
    from onnx import TensorProto, helper

    if not isinstance(opset, int) or opset < MIN_OPSET or opset > onnx.defs.onnx_opset_version():
        raise OnnxExportError(
            f"opset {opset!r} is not supported: expected {MIN_OPSET}..{onnx.defs.onnx_opset_version()}",
            field="opset",
            value=opset,
        )
    _check_spec(spec, tensors)
    if reassembly:
        try:
            padded_size = resolve_padded_size(spec, padded_size, what="reassembly=True (pass padded_size=)")
        except SpecError as exc:
            raise OnnxExportError(exc.reason, field=exc.field, value=padded_size) from None

    g = GraphBuilder(opset)
    g.reserve(INPUT_NAME, POSITIONS_NAME)
    net = Network(g, spec, tensors)
    out = net.build(INPUT_NAME)
    _check_batch_norm_coverage(net)

    N, C, Cout = spec.N, spec.channels_in, spec.channels_out
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, C, N, N])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, Cout, N, N, 2])]
    meta: dict[str, str] = {
        "producer": "ptycho-bridge",
        "family": spec.family,
        "opset": str(opset),
        "network_spec": json.dumps(spec.to_dict(), sort_keys=True),
        "input_convention": (
            f"{INPUT_NAME}: float32 [B, C, N, N] canonical x_norm (normalised amplitude the first conv "
            "sees; TF: input / exp(f32(ln intensity_scale)), torch: input * input_scale_factor)"
        ),
        "output_convention": f"{OUTPUT_NAME}: float32 [B, Cout, N, N, 2] per-patch object, (real, imag) last",
        "reassembly": "false",
    }
    if reassembly:
        assert padded_size is not None
        if spec.object_big and C != Cout:
            raise OnnxExportError(f"reassembly needs one patch per input channel (C={C}, Cout={Cout})")
        inputs.append(helper.make_tensor_value_info(POSITIONS_NAME, TensorProto.FLOAT, [BATCH_DIM, 1, 2, C]))
        emit_reassembly(g, spec, out, POSITIONS_NAME, padded_size, centre=reassembly_centre)
        outputs.append(helper.make_tensor_value_info(TRIMMED_NAME, TensorProto.FLOAT, [BATCH_DIM, N, N, 1, 2]))
        meta["reassembly"] = "true"
        meta["reassembly_padded_size"] = str(padded_size)
        meta["reassembly_convention"] = (
            f"{POSITIONS_NAME}: float32 [B, 1, 2, C] TF input_positions ([..., 0, :] = x, [..., 1, :] = y); "
            f"{TRIMMED_NAME}: float32 [B, N, N, 1, 2] = TF trimmed_obj. Per-sample path only: offsets are "
            f"centred over the whole batch (outputs depend on batch composition); TF collapses the batch "
            f"when B·C >= {BATCH_COLLAPSE_PATCHES}, which this graph does not reproduce"
        )
        if not reassembly_centre:
            meta["reassembly_convention"] = meta["reassembly_convention"].replace(
                "offsets are centred over the whole batch (outputs depend on batch composition)",
                "each patch is translated by its own offset, not centred over the batch (upstream's SavedModel era)")
            meta["reassembly_centring"] = "false"
    for key, value in (metadata or {}).items():
        meta[str(key)] = str(value)

    graph = helper.make_graph(g.nodes, "diffraction_to_obj", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="ptycho-bridge",
        doc_string="PtychoPINN CNN diffraction_to_obj, built from canonical tensors by ptycho-bridge",
    )
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def ops_used(model: "onnx.ModelProto") -> list[str]:
    """Sorted distinct op types of a model's graph (for reports)."""
    return sorted({n.op_type for n in model.graph.node})


def model_bytes(model: "onnx.ModelProto | bytes | str | os.PathLike[str]") -> bytes:
    """The serialised model, given as a ``ModelProto``, its bytes, or the path of an ``.onnx`` file."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    return model.SerializeToString()


def save_onnx(model: "onnx.ModelProto | bytes", path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write atomically (:func:`ptycho_bridge.io.atomic.atomic_write`: temp file, fsync, rename).

    Readers see either the old file or the complete new one, never a partial write. With
    ``overwrite=False`` an existing ``path`` raises :class:`OutputExistsError`, also when it appears
    during the write (the commit is then a hard link, which never clobbers).
    """
    target = Path(path)
    data = model_bytes(model)
    with atomic_write(target, force=overwrite) as fh:
        fh.write(data)
    return target
