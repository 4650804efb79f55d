"""The ``ptycho-bridge`` command line (click): one module per verb, loaded when its command runs.

Conventions (../shared/docs/design.md §5, check-jsonschema's): ``--json`` prints one JSON document on stdout,
human output is a table, logs and errors go to stderr as one line without a traceback; exit 0 on
success, 1 on a failed check or bad input, 2 on usage errors.

Why lazy: ``ptycho-bridge --help`` and ``inspect`` must not pay for the imports of ``run`` or
``parity``. :data:`VERBS` names each verb's module and its one-line help, so listing the commands
imports nothing; the module is imported only when the verb is invoked (click's lazy-group pattern).
"""

from __future__ import annotations

import importlib

import click

from ptycho_bridge import __version__

# verb -> (module holding ``command``, one-line help shown by ``--help``)
VERBS: dict[str, tuple[str, str]] = {
    "convert": ("ptycho_bridge.cli.convert", "Convert a model archive to the other backend, or refuse with the reason the networks differ."),
    "diff": ("ptycho_bridge.cli.diff", "Compare two archives (any eras) through their canonical tensors and parameters."),
    "export-ckpt": ("ptycho_bridge.cli.export_ckpt", "Write ARCHIVE's network as the Lightning .ckpt Ptychodus 1.7 loads (upstream torchapi-devel), or refuse."),
    "export-onnx": ("ptycho_bridge.cli.export_onnx", "Export ARCHIVE's network to ONNX (imports neither TensorFlow nor PyTorch)."),
    "inspect": ("ptycho_bridge.cli.inspect", "Show what an archive holds, without TensorFlow or PyTorch and without executing anything."),
    "migrate": ("ptycho_bridge.cli.migrate", "Migrate a legacy archive (TF ModelManager, torch bundle, torch-json, Lightning .ckpt) to bridge-2."),
    "pack": ("ptycho_bridge.cli.pack", "Package a Lightning .ckpt or model.pth with its training params into an archive upstream's torch loader opens."),
    "parity": ("ptycho_bridge.cli.parity", "Check that engines (and, with OTHER, two archives) give the same object on one input."),
    "reconstruct": ("ptycho_bridge.cli.reconstruct", "Reconstruct a scan DATASET with ARCHIVE's model and stitch the object image into OUTDIR."),
    "run": ("ptycho_bridge.cli.run", "Run ARCHIVE's network on --input with one engine; write the object to OUT."),
    "sample": ("ptycho_bridge.cli.sample", "Write the trained demo archive and a held-out simulated scan (no external data needed)."),
    "schema": ("ptycho_bridge.cli.schema", "Print one of the JSON Schemas shipped with ptycho-bridge."),
    "validate": ("ptycho_bridge.cli.validate", "Check archives: container bounds, schemas, structure, tensor specs and (bridge-2) checksums."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (help text comes from :data:`VERBS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS:
            return None
        module = importlib.import_module(VERBS[cmd_name][0])
        return module.command  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, VERBS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ptycho-bridge")
def main() -> None:
    """Inspect, validate, convert, export and parity-check PtychoPINN model archives."""




if __name__ == "__main__":  # pragma: no cover
    main()
