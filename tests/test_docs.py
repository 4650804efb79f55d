"""Docs that run: every ``ptycho-bridge`` command line in README.md and docs/*.md names a real verb and real
options, the README's two set-up commands exist, and the documented demo works end to end."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from tests._support import REPO  # noqa: E402

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _command_lines() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        in_block = False
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                in_block = not in_block
                continue
            if in_block and line.lstrip().startswith("ptycho-bridge "):
                out.append((doc.name, line.split("#", 1)[0].strip()))
    return out


COMMAND_LINES = _command_lines()


def test_docs_show_commands() -> None:
    assert len(COMMAND_LINES) >= 15


@pytest.mark.parametrize("doc,line", COMMAND_LINES, ids=[f"{d}:{l[:50]}" for d, l in COMMAND_LINES])
def test_documented_command_line_is_real(doc: str, line: str) -> None:
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
    verb = words[1]
    command = main.get_command(click.Context(main), verb)
    assert command is not None, f"{doc}: unknown verb {verb!r}"
    known = {opt for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    for word in words[2:]:
        if re.fullmatch(r"--?[a-z][a-z-]*", word):
            assert word in known, f"{doc}: {verb} has no option {word} (known: {sorted(known)})"


def test_readme_has_exactly_the_two_setup_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (REPO / script).is_file()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_demo_job_runs_on_the_bundled_sample(tmp_path: Path) -> None:
    """What scripts/demo.sh runs after installing: sample → inspect → validate, all exit 0."""
    runner = CliRunner()
    made = runner.invoke(main, ["sample", "-o", str(tmp_path)])
    assert made.exit_code == 0, made.output
    archive = tmp_path / "wts.h5.zip"
    assert archive.is_file()
    for args in (["inspect", str(archive)], ["validate", str(archive)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    demo = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    for verb in ("sample", "inspect", "validate"):
        assert f"ptycho-bridge {verb}" in demo
