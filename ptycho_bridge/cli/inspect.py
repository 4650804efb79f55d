"""``ptycho-bridge inspect``: what an archive holds, as a table or JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ptycho_bridge.cli import batch, tables, util
from ptycho_bridge.cli.util import emit_json, guarded
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.ops.report import inspect_report


# inspect exits 0 on archives validate refuses (NaN weights, checksum mismatches): say so, on stderr, so --json and
# --jsonl stdout stay one machine-readable document and the tables stay unchanged
METADATA_ONLY = "note: metadata only: run `validate` to check tensors and checksums"

# what each upstream torch network variant is, for people
VARIANT_TEXT = {
    "main": "main network (upstream PtychoPINN main's ptycho_torch: save_torch_bundle, load_inference_bundle_torch)",
    "torchapi-devel": "torchapi-devel network (the Lightning model Ptychodus 1.7 loads; outer branch added without "
                      "the border mask)",
}


@click.command("inspect")
@click.argument("archives", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/inspect-report.schema.json).")
@click.option("--jsonl", "as_jsonl", is_flag=True,
              help="One inspect-report per line, per archive read; failures go to stderr as error lines.")
@click.option("--tensors", is_flag=True, help="List every canonical tensor with shape and dtype.")
@click.option("-r", "--recursive", is_flag=True, help=batch.RECURSIVE_HELP)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help=batch.JOBS_HELP)
@guarded
def command(archives: tuple[Path, ...], as_json: bool, as_jsonl: bool, tensors: bool, recursive: bool,
            jobs: int | None) -> None:
    """Show what an archive holds, without TensorFlow or PyTorch and without executing anything."""

    paths = batch.expand(archives, recursive)
    single = batch.resolve_single(archives, paths)
    if single is not None and not as_jsonl:
        # reads no tensor bytes and builds no array: inspect imports no numpy for most archives
        report = inspect_report(read_archive(single, verify=False, lazy_arrays=True), tensors=tensors)
        if as_json:
            emit_json(report)
            return
        _print_inspect(report)
        click.echo(METADATA_ONLY, err=True)
        return
    if as_json:
        raise click.UsageError("--json prints one archive's report; use --jsonl for several archives")
    failed = 0
    for path, report, error in batch.inspect_many(paths, tensors=tensors, jobs=jobs or batch.default_jobs()):
        if report is None:
            failed += 1
            click.echo(f"error: {path}: {error}", err=True)
        elif as_jsonl:
            batch.emit_line(report)
        else:
            _print_inspect(report)
    if not as_jsonl and failed < len(paths):
        click.echo(METADATA_ONLY, err=True)
    batch.verdict(len(paths) - failed, failed, ("read", "failed"))
    sys.exit(1 if failed else 0)


def _print_inspect(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = tables.console()
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("archive", util.cell(report["path"]))
    head.add_row("era", util.cell(report["era"] + (f" (format {report['format_version']})" if report["format_version"] else "")))
    head.add_row("backend", util.cell(report["backend"]))
    head.add_row("intensity_scale", "—" if report["intensity_scale"] is None else f"{report['intensity_scale']:.10g}")
    probe = report["probe"]
    head.add_row("probe", "—" if probe is None else util.cell(f"{probe['dtype']} {tuple(probe['shape'])}"))
    head.add_row("checksums", "yes" if report["has_checksums"] else "no (legacy era)")
    _provenance_rows(head, report)
    net = report["network"]
    if net:
        head.add_row("network", util.cell(f"N={net['N']} gridsize={net['gridsize']} channels={net['channels']} "
                                f"n_filters_scale={net['n_filters_scale']}"))
        flags = ["object_big", "probe_big", "pad_object", "cbam_encoder", "cbam_bottleneck", "batch_norm"]
        head.add_row("flags", util.cell(" ".join(f"{f}={net.get(f)}" for f in flags)))
        head.add_row("heads", util.cell(f"amp_activation={net['amp_activation']} c_outer={net.get('c_outer')} "
                                        f"outer_width={net.get('outer_width')} channels_out={net.get('channels_out')}"
                                        + (f" amp_channels={net['amp_channels']}" if "amp_channels" in net else "")
                                        + (" outer_mask=False" if net.get("outer_mask") is False else "")))
        if "upstream_variant" in net:
            head.add_row("upstream", util.cell(VARIANT_TEXT.get(net["upstream_variant"], str(net["upstream_variant"]))))
        for variant in net.get("variants", []):
            head.add_row("variant", util.cell(f"{variant['text']} ({variant['upstream']})"))
    console.print(head)
    models = tables.table(("model", "payload", "tensors", "bytes", "notes"), title="models", right=("tensors", "bytes"))
    for name, m in report["models"].items():
        kind = m["payload"].get("kind", "?")
        models.add_row(util.cell(name), util.cell(kind), str(m["n_tensors"]), f"{m['tensor_bytes']:,}",
                       "sentinel placeholder" if m["sentinel"] else "")
    console.print(models)
    for name, m in report["models"].items():
        if "tensors" in m:
            t = tables.table(("canonical name", "shape", "dtype", "source"), title=util.cell(f"{name} tensors"))
            for row in m["tensors"]:
                t.add_row(*(util.cell(v) for v in (row["name"], tuple(row["shape"]), row["dtype"], row["source_name"] or "")))
            console.print(t)
    warnings = report["warnings"] + [f"{n}: {w}" for n, m in report["models"].items() for w in m["warnings"]]
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {util.cell(w)}")
    for n in report.get("notes", []):
        console.print(f"note: {util.cell(n)}")


def _provenance_rows(head: Any, report: dict[str, Any]) -> None:
    """Source era, the tool that wrote the archive, and the conversion/migration choices it recorded.

    Recorded text is added as ``rich.text.Text`` (plain text, never parsed as markup: ``[num_datasets=1]``)."""
    from rich.text import Text

    prov = report.get("provenance") or {}
    if report.get("source_era"):
        head.add_row("source era", util.cell(report["source_era"]))
    if prov.get("tool"):
        head.add_row("written by", util.cell(f"{prov['tool']} {prov.get('tool_version') or ''}".strip()
                     + (f", {prov['created']}" if prov.get("created") else "")))
    conv = report.get("conversion")
    if conv:
        head.add_row("converted", f"{conv['from_backend']} → {conv['to_backend']}")
        for choice in conv["choices"]:
            head.add_row("  choice", Text(util.plain(choice)))
    for note in prov.get("migration") or []:
        head.add_row("  migration", Text(util.plain(note)))
