"""The lazy CLI group: ``--help`` lists every verb with its own help and imports no verb module."""

from __future__ import annotations

import subprocess
import sys

import click

from ptycho_bridge.cli import VERBS, main
from tests._support import REPO


def test_every_verb_loads_and_its_listed_help_is_its_docstring() -> None:
    ctx = click.Context(main)
    for name, (module, short) in VERBS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name, module
        first_line = (command.help or "").strip().splitlines()[0]
        assert short == first_line, f"VERBS[{name!r}] help drifted from the command's docstring"


def test_help_imports_no_verb_module_and_no_heavy_library() -> None:
    code = ("import sys\nfrom ptycho_bridge.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "verbs = [m for m in sys.modules if m.startswith('ptycho_bridge.cli.') and m != 'ptycho_bridge.cli.util']\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'h5py') if m in sys.modules]\n"
            "print('LOADED', verbs, heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED [] []" in proc.stdout, proc.stdout
    for name in VERBS:
        assert name in proc.stdout
