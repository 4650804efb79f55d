"""``ptycho-bridge diff A B``: what differs between two archives (params, configs, specs, tensors).

Exit 0 when the archives are equivalent within ``--atol`` (default 0: bit-identical), 1 otherwise.
Neither TensorFlow nor PyTorch is imported: both sides go through the safe readers. The first line of
the human form says whether the weights are equal; ``--tensors-only`` and ``--model NAME`` narrow
the comparison (and the exit code) to what matters after a round trip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ptycho_bridge.cli import tables, util
from ptycho_bridge.cli.util import emit_json, guarded, no_verify_option
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.ops.diff import diff_archives


@click.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/diff-report.schema.json).")
@click.option("--atol", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Largest absolute difference still counted as equal (arrays and floats); 0 means bit-identical.")
@click.option("--tensors-only", is_flag=True,
              help="Compare canonical tensors only (not params, configs, network specs or placeholders).")
@click.option("--model", "model", default=None, metavar="NAME", help="Compare this model only (e.g. diffraction_to_obj).")
@no_verify_option
@guarded
def command(a: Path, b: Path, as_json: bool, atol: float, tensors_only: bool, model: str | None, no_verify: bool) -> None:
    """Compare two archives (any eras) through their canonical tensors and parameters."""

    arch_a, arch_b = read_archive(a, verify=not no_verify), read_archive(b, verify=not no_verify)
    try:
        report = diff_archives(arch_a, arch_b, atol=atol, tensors_only=tensors_only, model=model)
    except KeyError:
        raise click.BadParameter(f"no model {model!r} in either archive (a: {sorted(arch_a.models)}, "
                                 f"b: {sorted(arch_b.models)})", param_hint="--model") from None
    if as_json:
        emit_json(report)
    else:
        print_report(report)
    sys.exit(0 if report["equivalent"] else 1)


def _fmt(value: Any) -> str:
    """Values (not identifiers) are shortened only when very long (a whole nested config)."""
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def weights_line(report: dict[str, Any]) -> str:
    """The first line: are the weights equal?"""
    w = report["weights"]
    tol = "bit-identical" if report["atol"] == 0 else f"within atol={report['atol']:g}"
    if w["equal"] is None:
        return "weights: no model holds weights in both archives"
    if w["equal"]:
        return f"weights: equal ({w['tensors_compared']} tensors {tol}; models {', '.join(w['models'])})"
    return f"weights: DIFFER ({w['tensors_differing']} tensor difference(s); models {', '.join(w['models'])})"


def print_report(report: dict[str, Any]) -> None:
    """The human form: one table of differences, or one line saying there are none."""
    console = tables.console()
    console.print(util.cell(weights_line(report)))
    console.print("a: " + util.cell(f"{report['a']['path']} ({report['a']['era']}, {report['a']['backend']})"))
    console.print("b: " + util.cell(f"{report['b']['path']} ({report['b']['era']}, {report['b']['backend']})"))
    skipped = report.get("scope", {}).get("not_compared") or []
    if skipped:
        console.print("not compared (weights on one side only): " + util.cell(", ".join(skipped)))
    rows: list[tuple[str, str, str, str, str]] = []
    for c in report["header"]:
        rows.append(("archive", c["key"], _fmt(c["a"]), _fmt(c["b"]), c["detail"]))
    for section in ("params", "torch_config"):
        part = report[section]
        rows += [(section, k, "—", "present", "added") for k in part["added"]]
        rows += [(section, k, "present", "—", "removed") for k in part["removed"]]
        rows += [(section, c["key"], _fmt(c["a"]), _fmt(c["b"]), c["detail"]) for c in part["changed"]]
    for m in report["models"]:
        where = f"model {m['name']}"
        if m["status"] in ("only in a", "only in b"):
            rows.append((where, "", "present" if m["status"] == "only in a" else "—",
                         "present" if m["status"] == "only in b" else "—", m["status"]))
            continue
        rows += [(where, f"network.{c['key']}", _fmt(c["a"]), _fmt(c["b"]), c["detail"]) for c in m["network"]]
        rows += [(where, t, "present", "—", "tensor missing in b") for t in m["missing"]]
        rows += [(where, t, "—", "present", "tensor only in b") for t in m["extra"]]
        rows += [(where, t["name"], str(tuple(t["a"])), str(tuple(t["b"])), "shape") for t in m["shape_mismatch"]]
        rows += [(where, t["name"], t["a"], t["b"], "dtype") for t in m["dtype_mismatch"]]
        rows += [(where, t["name"], "", "", f"max abs diff {t['max_abs_diff']:.6g}") for t in m["value_diff"]]
    compared = sum(m["compared"] for m in report["models"])
    if not rows:
        tol = "bit-identical" if report["atol"] == 0 else f"within atol={report['atol']:g}"
        scope = "tensors" if report.get("scope", {}).get("tensors_only") else "params, configs, specs and tensors"
        console.print(f"[green]equivalent[/green]: {scope} ({compared} tensors) are {tol}")
        return
    table = tables.table(("where", "key", "a", "b", "detail"), title=f"{report['differences']} difference(s)")
    for row in rows:
        table.add_row(*(util.cell(v) for v in row))
    console.print(table)
