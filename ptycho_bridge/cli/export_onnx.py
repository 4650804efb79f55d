"""``ptycho-bridge export-onnx``: write an archive's network as an ONNX model, without TF or torch.

Why: ONNX is the deployable engine that needs neither framework. The graph is built from the
neutral spec and canonical tensors (:mod:`converters.onnx`); ``metadata_props`` record where it
came from (the source archive's sha256, era, backend, model name) beside the network spec JSON that
:func:`converters.onnx.build_onnx` always stores. The file is written atomically and an existing
file is only replaced with ``--force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from converters.onnx.export import build_onnx, save_onnx
from converters.onnx.layout import MIN_OPSET
from ptycho_bridge import __version__
from ptycho_bridge.cli.progress import status
from ptycho_bridge.cli.util import guarded, no_verify_option
from ptycho_bridge.io.atomic import refuse_existing, resolve_output
from ptycho_bridge.ops.extras import require
from ptycho_bridge.ops.parity import archive_under_test


@click.command("export-onnx")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Output .onnx file (or a folder, which gets model.onnx).")
@click.option("--model", default="diffraction_to_obj", show_default=True, help="Which model of the archive.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the exporter's minimum, 17).")
@click.option("--reassembly", is_flag=True,
              help="Add TF's reassembly stage (extra input 'positions', output 'trimmed_object').")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@no_verify_option
@guarded
def command(archive: Path, out: Path, model: str, opset: int | None, reassembly: bool, force: bool, no_verify: bool) -> None:
    """Export ARCHIVE's network to ONNX (imports neither TensorFlow nor PyTorch).

    Prints the written path, then the model's inputs and outputs (name, dtype, shape; B = batch).
    """

    target = resolve_output(out, "model.onnx")
    refuse_existing(target, force=force)
    require("onnx", "export-onnx", packages=("onnx",))  # a core install: one line naming the pip install
    aut = archive_under_test(archive, model=model, verify=not no_verify)
    metadata = {
        "source_archive": archive.name,
        "source_sha256": aut.sha256 or "",
        "source_era": aut.archive.era,
        "source_backend": aut.archive.backend,
        "source_model": model,
        "exporter": f"ptycho-bridge {__version__}",
    }
    if aut.archive.intensity_scale is not None:
        metadata["intensity_scale"] = repr(float(aut.archive.intensity_scale))
    with status(f"building the ONNX graph of {archive.name}"):
        onnx_model = build_onnx(aut.spec, aut.tensors, opset=MIN_OPSET if opset is None else opset,
                                metadata=metadata, reassembly=reassembly, reassembly_centre=aut.reassembly_centring)
        save_onnx(onnx_model, target, overwrite=force)
    click.echo(str(target))
    for kind, values in (("input", onnx_model.graph.input), ("output", onnx_model.graph.output)):
        for v in values:
            dtype, shape = _signature(v)
            click.echo(f"  {kind:<6} {v.name:<15} {dtype:<9} [{', '.join(shape)}]")


def _signature(value: Any) -> tuple[str, list[str]]:
    """dtype name and dims (symbolic ones by name) of an ONNX ``ValueInfoProto``."""
    from onnx import helper

    t = value.type.tensor_type
    dtype = str(helper.tensor_dtype_to_np_dtype(t.elem_type))
    dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
    return dtype, dims
