"""Subcommands that live in their own modules (one module per verb), registered by ``cli.main``.

Each module defines one click command named like the module and uses :func:`ptycho_bridge.cli.guarded`
and :func:`ptycho_bridge.cli.emit_json`; frameworks are imported inside the command body only.
"""

COMMAND_MODULES = ("convert", "migrate", "diff", "export_onnx", "run", "parity")
