"""The ONNX graph cache: miss then verified hit, corrupt entries rebuilt, no ``onnx`` import on a hit, keys by content."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho_bridge.ops import graph_cache
from ptycho_bridge.ops.reconstruct.modelinfo import open_model
from ptycho_bridge.ops.reconstruct.pipeline import reconstruct
from tests.ops.reconstruct._cases import DATASET, archive, need_fixtures

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[2]


def _run(folder: Path, **kw):  # type: ignore[no-untyped-def]
    return reconstruct(archive("tf_N64_gs1"), DATASET, "onnx", n_groups=12, **kw)


def test_miss_hit_rebuilt_and_off_give_the_same_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_fixtures()
    monkeypatch.setenv(graph_cache.ENV_DIR, str(tmp_path))
    first = _run(tmp_path)
    assert first.info["cache"]["status"] == "miss" and first.info["cache"]["reason"] == "not cached"
    entry = Path(first.info["cache"]["path"])
    assert entry.parent == tmp_path / graph_cache.SUBDIR and entry.is_file()
    side = json.loads(entry.with_suffix(".json").read_text())
    assert side["size"] == entry.stat().st_size and side["key"] == entry.stem

    second = _run(tmp_path)
    assert second.info["cache"]["status"] == "hit" and second.info["cache"]["key"] == entry.stem
    np.testing.assert_array_equal(second.object, first.object)

    data = bytearray(entry.read_bytes())  # one flipped byte in a weight: the sha256 check must catch it
    data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))
    third = _run(tmp_path)
    assert third.info["cache"]["status"] == "rebuilt" and "sha256" in third.info["cache"]["reason"]
    np.testing.assert_array_equal(third.object, first.object)
    assert _run(tmp_path).info["cache"]["status"] == "hit"  # the rewritten entry verifies again

    entry.with_suffix(".json").write_text("[]")  # a sidecar that is not ours is a miss, not a crash
    assert _run(tmp_path).info["cache"]["status"] == "rebuilt"

    off = _run(tmp_path, cache=False)
    assert off.info["cache"] == {"status": "off", "path": None, "key": None, "reason": None}
    np.testing.assert_array_equal(off.object, first.object)
    monkeypatch.setenv(graph_cache.ENV_OFF, "1")
    assert _run(tmp_path).info["cache"]["status"] == "off"


def test_folder_follows_the_env_var_then_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(graph_cache.ENV_DIR, "/somewhere/else")
    assert graph_cache.default_dir() == Path("/somewhere/else")
    monkeypatch.delenv(graph_cache.ENV_DIR)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
        assert graph_cache.default_dir() == Path("/xdg/ptycho-bridge")
        monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec: relative paths are ignored
        assert graph_cache.default_dir() == Path.home() / ".cache" / "ptycho-bridge"


def test_key_follows_content_and_options() -> None:
    need_fixtures()
    info = open_model(archive("tf_N64_gs1"))
    opts = graph_cache.ONNX_OPTIONS
    base = graph_cache.graph_key(info.spec, info.tensors, opts)
    assert graph_cache.graph_key(info.spec, dict(info.tensors), opts) == base
    name = sorted(info.tensors)[0]
    changed = {**info.tensors, name: np.nextafter(info.tensors[name], np.inf).astype(info.tensors[name].dtype)}
    assert graph_cache.graph_key(info.spec, changed, opts) != base
    assert graph_cache.graph_key(info.spec, info.tensors, {**opts, "reassembly": True}) != base


def test_oversized_entry_is_not_read(tmp_path: Path) -> None:
    key = "0" * 64
    graph_cache.store(tmp_path, key, b"x" * 100, {})
    assert graph_cache.lookup(tmp_path, key, 1000) == (b"x" * 100, "")
    data, why = graph_cache.lookup(tmp_path, key, 99)
    assert data is None and "larger than the bound" in why


def test_prune_keeps_the_newest_and_drops_stale_leftovers(tmp_path: Path) -> None:
    for i in range(5):
        graph_cache.store(tmp_path, f"{i:064x}", b"g", {})
        os.utime(tmp_path / f"{i:064x}.json", (1000 + i, 1000 + i))
    partial, orphan, fresh = tmp_path / ".x.onnx.abc.partial", tmp_path / f"{9:064x}.onnx", tmp_path / f"{8:064x}.onnx"
    for p in (partial, orphan, fresh):
        p.write_bytes(b"half")
    for p in (partial, orphan):
        os.utime(p, (1000, 1000))
    graph_cache.prune(tmp_path, keep=f"{0:064x}", max_entries=2)
    assert sorted(p.name[-6:] for p in tmp_path.glob("*.json")) == ["0.json", "3.json", "4.json"]
    assert not partial.exists() and not orphan.exists() and fresh.exists()  # a write in progress is left alone


def test_an_unwritable_cache_folder_never_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_fixtures()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(graph_cache.ENV_DIR, str(blocker))
    r = _run(tmp_path)
    assert r.info["cache"]["status"] == "unwritable" and "not stored" in r.info["cache"]["reason"]
    assert np.isfinite(r.object).all()


def test_a_hit_imports_neither_onnx_nor_matplotlib(tmp_path: Path) -> None:
    """The whole CLI run, twice in fresh processes: the second (a cache hit) needs neither package."""
    need_fixtures()
    code = (
        "import json, sys\n"
        "from ptycho_bridge.cli import main\n"
        f"main(['reconstruct', {archive('tf_N64_gs1')!r}, {str(DATASET)!r}, '-o', sys.argv[1], '--n-groups', '8'],"
        " standalone_mode=False)\n"
        "cache = json.load(open(sys.argv[1] + '/reconstruct.json'))['cache']['status']\n"
        "print(cache, 'onnx' in sys.modules, 'matplotlib' in sys.modules)\n"
    )
    env = {**os.environ, graph_cache.ENV_DIR: str(tmp_path / "cache"), "PYTHONPATH": str(REPO),
           "PTYCHO_BRIDGE_NO_PROGRESS": "1"}
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / f"out{i}")], env=env, capture_output=True,
                           text=True, check=True).stdout.splitlines()[-1] for i in range(2)]
    assert outs == ["miss True False", "hit False False"]


def test_entries_are_private_files(tmp_path: Path) -> None:
    # the graphs hold the user's weights: 0600 files in a 0700 folder, whatever the umask
    folder = tmp_path / "cache"
    old = os.umask(0o022)
    try:
        graph = graph_cache.store(folder, "k" * 64, b"graph bytes", {"what": "test"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(graph.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / ("k" * 64 + ".json")).stat().st_mode) == 0o600
