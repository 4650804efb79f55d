"""``ptycho-bridge parity``: one canonical input through every requested engine; compare; exit 0/1.

The rule, the references and the report live in :mod:`ptycho_bridge.ops.parity`; this module parses
options, prints a rich table (or ``--json``, schema ``parity-report``) and sets the exit code:
0 when every comparison passes, 1 when one fails, there was nothing to compare, or an engine named
in ``--engines`` cannot run (not installed, or unable to build the network): that is an error, not a skip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ptycho_bridge.cli import tables, util
from ptycho_bridge.cli.progress import track, verdict
from ptycho_bridge.cli.util import emit_json, guarded, no_verify_option
from ptycho_bridge.ops.engines import ENGINE_EXTRAS, ENGINE_NAMES, engine_module, parse_engines
from ptycho_bridge.ops.extras import MissingDependency, missing_packages
from ptycho_bridge.ops.plots import Panel, require_plotting, save_figure, worst_patch
from ptycho_bridge.ops.parity import (
    DEFAULT_RTOL,
    archive_under_test,
    load_input,
    parity_report,
    random_input,
)


@click.command("parity")
@click.argument("archive", type=click.Path(exists=True, path_type=Path))
@click.argument("other", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--engines", "engines_text", default=",".join(ENGINE_NAMES), show_default=True,
              help="Comma-separated engines. Named here, an engine that cannot run (not installed, or unable to build the "
                   "network) is an error; by default such engines are skipped and named.")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Input .npz: 'amplitude' [B,C,N,N] or an upstream golden.npz (its 'output' is compared too).")
@click.option("--random", "use_random", is_flag=True, help="Use seeded random normalised input instead.")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Samples for --random.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random.")
@click.option("--rtol", type=click.FloatRange(min=0), default=None, help="Relative tolerance (default 1e-5).")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Absolute tolerance (default 1e-5·max|ref| per region).")
@click.option("--model", default="diffraction_to_obj", show_default=True, help="Which model of the archives.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (schemas/parity-report.schema.json).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG: per comparison, amplitude and phase of the reference and |act - ref| maps "
                   "(needs matplotlib: the 'reconstruct' extra). An existing file is replaced.")
@no_verify_option
@guarded
def command(archive: Path, other: Path | None, engines_text: str, input_path: Path | None, use_random: bool,
            batch: int, seed: int, rtol: float | None, atol: float | None, model: str, as_json: bool,
            plot_path: Path | None, no_verify: bool) -> None:
    """Check that engines (and, with OTHER, two archives) give the same object on one input.

    Prints a table (or --json) on stdout and, last, a verdict on stderr: `N passed, M failed`.
    """

    try:
        engines = parse_engines(engines_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--engines") from None
    if (input_path is None) == (not use_random):
        raise click.UsageError("give exactly one of --input FILE or --random")
    strict = click.get_current_context().get_parameter_source("engines_text") != ParameterSource.DEFAULT
    if strict:  # a named engine that is not installed: say what to install, before any work
        for name in engines:
            missing = missing_packages(engine_module(name).REQUIRES)
            if missing:
                raise MissingDependency(f"engine {name}", missing, ENGINE_EXTRAS[name])
    if plot_path is not None:
        require_plotting()
    archives = [archive_under_test(archive, label="A" if other else "", model=model, verify=not no_verify)]
    if other is not None:
        archives.append(archive_under_test(other, label="B", model=model, verify=not no_verify))
    first = archives[0]
    inp = random_input(first.spec, batch, seed) if use_random else load_input(input_path, first.archive, first.spec)
    kept: dict[int, Any] = {}
    report = parity_report(archives, engines, inp, rtol=DEFAULT_RTOL if rtol is None else rtol, atol=atol,
                           strict=strict, keep=kept if plot_path is not None else None,
                           progress=lambda jobs: track(jobs, total=len(jobs), label="parity",
                                                       describe=lambda j: f"{j[1]} on {j[0] or archive.name}"))
    if as_json:
        emit_json(report)
    else:
        _print(report, strict)
    if plot_path is not None:
        _plot(plot_path, report, kept)
    if not report["ok"]:
        failed = [c for c in report["comparisons"] if not c["ok"]]
        if strict and report["engines"]["skipped"]:
            s = report["engines"]["skipped"][0]
            click.echo(f"error: requested engine {s['engine']} cannot run on {s['archive']}: {s['reason']}"
                       + (f" (and {len(report['engines']['skipped']) - 1} more)" if len(report["engines"]["skipped"]) > 1
                          else ""), err=True)
        elif failed:
            worst = failed[0]
            region = max(worst["regions"], key=lambda r: worst["regions"][r]["worst_ratio"] or float("inf"))
            r = worst["regions"][region]
            util.echo_line("error", f"parity failed: {worst['actual']} vs {worst['reference']} ({region}): "
                                    f"max abs err {r['max_abs_err']:.3g} > allowed (max|ref| {r['max_ref']:.3g}, "
                                    f"{len(failed)} failing comparison(s))")
        else:
            util.echo_line("error", _last_note(report) or "parity failed")
    passed = sum(1 for c in report["comparisons"] if c["ok"])
    verdict(passed, len(report["comparisons"]) - passed)  # last, after any error line
    sys.exit(0 if report["ok"] else 1)


def _last_note(report: dict[str, Any]) -> str | None:
    """The note that becomes the ``error:`` line when nothing failed a comparison (nothing to compare)."""
    return report["notes"][-1] if report["notes"] else None


def _plot(path: Path, report: dict[str, Any], kept: dict[int, Any]) -> None:
    panels = []
    for i, c in enumerate(report["comparisons"]):
        if i not in kept:
            continue
        actual, reference = kept[i]
        idx = worst_patch(actual, reference)
        where = "".join(f"[{k}]" for k in idx)
        verdict_word = "ok" if c["ok"] else "FAIL"
        panels.append(Panel(f"{c['actual']} vs {c['reference']} {where} ({verdict_word})", reference[idx], actual[idx]))
    if not panels:
        click.echo(f"note: --plot: no comparison to draw; {path} not written", err=True)
        return
    save_figure(path, panels, title=f"parity: {report['archives'][0]['path']}", force=True)
    click.echo(f"plot: {path}", err=True)


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3g}"


def _print(report: dict[str, Any], strict: bool = False) -> None:

    console = tables.console()
    for a in report["archives"]:
        console.print(f"[bold]{a['label'] or 'archive'}[/bold] {util.cell(a['path'])} ({a['era']}, {a['backend']})")
    inp = report["input"]
    console.print(f"input: {inp['kind']} {util.cell(inp['source'])} shape={inp['shape']}"
                  + (f" expected={inp['expected_output']}" if inp["expected_output"] else ""))
    cols = ("reference", "actual", "level", "region", "max|ref|", "max abs", "max rel", "rms", "atol", "result")
    table = tables.table(cols, title=f"parity ({report['tolerance']['rule']}; rtol={report['tolerance']['rtol']:g})",
                         right=[c for c in cols if c.startswith(("max", "rms", "atol"))])
    for c in report["comparisons"]:
        for region, r in c["regions"].items():
            table.add_row(c["reference"], c["actual"], c["level"], region, _fmt(r["max_ref"]), _fmt(r["max_abs_err"]),
                          _fmt(r["max_rel_err"]), _fmt(r["rms_err"]), _fmt(r["atol"]),
                          "[green]ok[/green]" if r["ok"] else "[red]FAIL[/red]")
    if report["comparisons"]:  # an empty table says nothing; the error line says why
        console.print(table)
    for run in report["engines"]["ran"]:
        console.print(f"ran {run['label']} in {run['seconds']:.2f} s")
    for s in report["engines"]["skipped"]:
        console.print(f"{'[red]error[/red]' if strict else '[yellow]skipped[/yellow]'} {s['engine']} ({util.cell(s['archive'])}): {util.cell(s['reason'])}")
    last = _last_note(report) if not report["comparisons"] else None
    for n in report["notes"]:
        if n != last:  # that one is printed once, as the error line
            console.print(f"note: {util.cell(n)}")
