"""Progress bars: stderr, terminal only, ``PTYCHO_BRIDGE_NO_PROGRESS=1`` off; the verdict line's one form."""

from __future__ import annotations

import sys

import pytest

from ptycho_bridge.cli import progress


def test_progress_only_on_a_terminal_and_never_with_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.NO_PROGRESS_ENV, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress.show_progress()
    monkeypatch.setenv(progress.NO_PROGRESS_ENV, "1")
    assert not progress.show_progress()
    monkeypatch.delenv(progress.NO_PROGRESS_ENV)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress.show_progress()


def test_track_yields_every_item_with_and_without_a_bar(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(progress, "show_progress", lambda: True)
    items = list(progress.track(iter([[1, 2], [3]]), total=3, label="work", weight=len, describe=lambda i: f"{i}"))
    assert items == [[1, 2], [3]]
    assert capsys.readouterr().out == ""  # a bar never touches stdout
    monkeypatch.setattr(progress, "show_progress", lambda: False)
    assert list(progress.track(range(3), total=3, label="x")) == [0, 1, 2]
    with progress.status("quiet"):
        pass
    assert capsys.readouterr().err == ""


def test_verdict_is_one_stderr_line(capsys: pytest.CaptureFixture[str]) -> None:
    progress.verdict(5, 1)
    out = capsys.readouterr()
    assert out.out == "" and out.err == "5 passed, 1 failed\n"


def test_migrate_shows_a_spinner_and_keeps_stdout_clean(monkeypatch: pytest.MonkeyPatch, tmp_path, fixtures_dir) -> None:  # type: ignore[no-untyped-def]
    """``migrate`` (write, validate, diff: seconds) spins on stderr; its --json on stdout is untouched."""
    import json

    from click.testing import CliRunner

    from ptycho_bridge.cli import main

    monkeypatch.setattr(progress, "show_progress", lambda: True)
    out = tmp_path / "m.zip"
    result = CliRunner().invoke(main, ["migrate", str(fixtures_dir / "torch_N64_gs1" / "wts.h5.zip"), "-o", str(out),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["written"] is True and out.is_file()
