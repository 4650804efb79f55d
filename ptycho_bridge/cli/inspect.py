"""``ptycho-bridge inspect``: what an archive holds, as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ptycho_bridge.cli import tables
from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.ops.report import inspect_report


@click.command("inspect")
@click.argument("archive", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/inspect-report.schema.json).")
@click.option("--tensors", is_flag=True, help="List every canonical tensor with shape and dtype.")
@guarded
def command(archive: Path, as_json: bool, tensors: bool) -> None:
    """Show what an archive holds, without TensorFlow or PyTorch and without executing anything."""

    report = inspect_report(read_archive(archive, verify=False), tensors=tensors)  # reads no tensor bytes
    if as_json:
        emit_json(report)
        return
    _print_inspect(report)


def _print_inspect(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = tables.console()
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("archive", report["path"])
    head.add_row("era", report["era"] + (f" (format {report['format_version']})" if report["format_version"] else ""))
    head.add_row("backend", report["backend"])
    head.add_row("intensity_scale", "—" if report["intensity_scale"] is None else f"{report['intensity_scale']:.10g}")
    probe = report["probe"]
    head.add_row("probe", "—" if probe is None else f"{probe['dtype']} {tuple(probe['shape'])}")
    head.add_row("checksums", "yes" if report["has_checksums"] else "no (legacy era)")
    _provenance_rows(head, report)
    net = report["network"]
    if net:
        head.add_row("network", f"N={net['N']} gridsize={net['gridsize']} channels={net['channels']} "
                                f"n_filters_scale={net['n_filters_scale']}")
        flags = ["object_big", "probe_big", "pad_object", "cbam_encoder", "cbam_bottleneck", "batch_norm"]
        head.add_row("flags", " ".join(f"{f}={net.get(f)}" for f in flags))
        head.add_row("heads", f"amp_activation={net['amp_activation']} c_outer={net.get('c_outer')} "
                              f"outer_width={net.get('outer_width')} channels_out={net.get('channels_out')}"
                              + (f" amp_channels={net['amp_channels']}" if "amp_channels" in net else "")
                              + (" outer_mask=False" if net.get("outer_mask") is False else ""))
        if "upstream_variant" in net:
            head.add_row("upstream", f"{net['upstream_variant']} network (the Lightning model Ptychodus 1.7 loads; "
                                     "outer branch added without the border mask)")
    console.print(head)
    models = tables.table(("model", "payload", "tensors", "bytes", "notes"), title="models", right=("tensors", "bytes"))
    for name, m in report["models"].items():
        kind = m["payload"].get("kind", "?")
        models.add_row(name, kind, str(m["n_tensors"]), f"{m['tensor_bytes']:,}",
                       "sentinel placeholder" if m["sentinel"] else "")
    console.print(models)
    for name, m in report["models"].items():
        if "tensors" in m:
            t = tables.table(("canonical name", "shape", "dtype", "source"), title=f"{name} tensors")
            for row in m["tensors"]:
                t.add_row(row["name"], str(tuple(row["shape"])), row["dtype"], row["source_name"] or "")
            console.print(t)
    warnings = report["warnings"] + [f"{n}: {w}" for n, m in report["models"].items() for w in m["warnings"]]
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for n in report.get("notes", []):
        console.print(f"note: {n}")


def _provenance_rows(head: Any, report: dict[str, Any]) -> None:
    """Source era, the tool that wrote the archive, and the conversion/migration choices it recorded.

    Recorded text is added as ``rich.text.Text`` (plain text, never parsed as markup: ``[num_datasets=1]``)."""
    from rich.text import Text

    prov = report.get("provenance") or {}
    if report.get("source_era"):
        head.add_row("source era", report["source_era"])
    if prov.get("tool"):
        head.add_row("written by", f"{prov['tool']} {prov.get('tool_version') or ''}".strip()
                     + (f", {prov['created']}" if prov.get("created") else ""))
    conv = report.get("conversion")
    if conv:
        head.add_row("converted", f"{conv['from_backend']} → {conv['to_backend']}")
        for choice in conv["choices"]:
            head.add_row("  choice", Text(choice))
    for note in prov.get("migration") or []:
        head.add_row("  migration", Text(note))
