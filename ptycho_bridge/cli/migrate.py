"""``ptycho-bridge migrate ARCHIVE -o OUT``: legacy era → bridge-2 of the same backend.

Legacy members are kept byte-for-byte so upstream loaders still open the output; ``--dry-run``
lists what would be written and writes nothing; an existing OUT is replaced only with ``--force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ptycho_bridge.cli import util
from ptycho_bridge.cli.progress import status
from ptycho_bridge.cli.util import emit_json, guarded, no_verify_option
from ptycho_bridge.io.atomic import resolve_output
from ptycho_bridge.ops.migrate import migrate


@click.command("migrate")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder (gets wts.h5.zip) or .zip path.")
@click.option("--dry-run", is_flag=True, help="Show the members that would be written; write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option("--drop-optimizer", is_flag=True,
              help="Leave the optimizer state (training only) out of kept model.keras members; weights stay byte-for-byte.")
@no_verify_option
@guarded
def command(archive: Path, out: Path, dry_run: bool, force: bool, as_json: bool, drop_optimizer: bool,
            no_verify: bool) -> None:
    """Migrate a legacy archive (TF ModelManager, torch bundle, torch-json, Lightning .ckpt) to bridge-2."""

    target = resolve_output(out)
    with status(f"migrating {archive.name} (write, validate, diff)"):
        plan, verified = migrate(archive, target, force=force, dry_run=dry_run, read_verify=not no_verify,
                                 drop_optimizer=drop_optimizer)
    members = plan.member_table()
    doc: dict[str, Any] = {
        "source": str(archive),
        "source_era": plan.source_era,
        "backend": plan.backend,
        "output": str(target),
        "dry_run": dry_run,
        "written": not dry_run,
        "members": members,
        "total_bytes": sum(r["size"] for r in members),
        "notes": plan.notes,
        "verified": verified,
    }
    if as_json:
        emit_json(doc)
        return
    from rich.table import Table

    console = util.console()
    verb = "would write" if dry_run else "wrote"
    table = Table(title=f"{verb} {target} (bridge-2, backend {plan.backend}, from {plan.source_era})", title_justify="left")
    for col in ("member", "bytes", "role"):
        table.add_column(col)
    for row in doc["members"]:
        table.add_row(util.cell(row["name"]), f"{row['size']:,}", util.cell(row["role"]))
    console.print(table)
    for note in plan.notes:
        console.print(f"note: {util.cell(note)}")
    if verified:
        console.print(f"verified: validate passes ({verified['checksums']}); diff against the source finds no "
                      f"difference ({verified['tensors_compared']} tensors bit-identical)")
    if dry_run:
        console.print("dry run: nothing written")
