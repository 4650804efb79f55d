"""``reconstruct`` on a Dask LocalCluster: the same bits as one process, integrity refusals, a killed worker.

One 2-process cluster is shared by the module (start-up dominates); the 1-worker comparison starts its own.
The kill test comes last: it kills a worker of the shared cluster (its nanny restarts it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from ptycho_bridge.cli import main
from ptycho_bridge.ops.reconstruct.distributed import cluster_client
from ptycho_bridge.ops.reconstruct.modelinfo import open_model
from ptycho_bridge.ops.reconstruct.pipeline import reconstruct
from ptycho_bridge.ops.reconstruct.stitch import CanvasWindow, TreeReducer, add_windows, tree_split
from ptycho_bridge.schema import schema_errors
from tests._support import REPO
from tests.ops.reconstruct._cases import CASES, DATASET, TOL, archive, golden, need_fixtures, rel

distributed = pytest.importorskip("distributed")

# (case, extra arguments): the shared scan at gridsize 1 and 2 in several blocks, and the goldens' own choices
SPLIT = {"block_groups": 8, "centring_batch": 8}
RUNS = [("tf_N64_gs1", SPLIT), ("tf_N64_gs2_n15", {}), ("torch_N64_gs2_n15", {"block_groups": 4, "centring_batch": 4})]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with cluster_client(workers=2) as c:
        yield c


def one_process(case: str, extra: dict[str, Any]):  # type: ignore[no-untyped-def]
    key = (case, tuple(sorted(extra.items())))
    if key not in _DONE:
        need_fixtures()
        _DONE[key] = reconstruct(archive(case), DATASET, "onnx", **{**CASES[case][1], **extra})
    return _DONE[key]


_DONE: dict[Any, Any] = {}


def _window(rng: np.random.Generator) -> CanvasWindow:
    r0, c0, h, w = (int(v) for v in rng.integers(0, 6, 2).tolist() + rng.integers(1, 5, 2).tolist())
    planes = [(rng.standard_normal((h, w)) * 10 ** rng.uniform(-3, 3)).astype(np.float32) for _ in range(3)]
    return CanvasWindow(r0, c0, *planes, groups=1)


def _tree(ws: list[CanvasWindow]) -> CanvasWindow:
    if len(ws) == 1:
        return ws[0]
    m = tree_split(len(ws))
    return add_windows(_tree(ws[:m]), _tree(ws[m:]))


def test_streaming_reducer_walks_the_fixed_tree() -> None:
    """The one-process reducer (binary counter) adds in exactly the order of the recursive tree the cluster runs."""
    rng = np.random.default_rng(5)
    differs = 0
    for n in range(1, 14):
        ws = [_window(rng) for _ in range(n)]
        red = TreeReducer()
        for w in ws:
            red.push(w)
        got, want = red.result(), _tree(ws)
        assert (got.r0, got.c0, got.groups) == (want.r0, want.c0, n)
        for a, b in ((got.num_re, want.num_re), (got.num_im, want.num_im), (got.count, want.count)):
            assert np.array_equal(a, b), n
        seq = ws[0]
        for w in ws[1:]:
            seq = add_windows(seq, w)
        differs += not np.array_equal(seq.num_re, want.num_re)
    assert differs > 0  # the order matters in float32, so a fixed tree is what makes the bits reproducible


@pytest.mark.parametrize("case,extra", RUNS, ids=[r[0] for r in RUNS])
def test_two_workers_equal_one_process_bit_for_bit(client: Any, case: str, extra: dict[str, Any]) -> None:
    ref = one_process(case, extra)
    got = reconstruct(archive(case), DATASET, "onnx", client=client, threads=1, **{**CASES[case][1], **extra})
    assert np.array_equal(got.object, ref.object) and got.norm_scale == ref.norm_scale
    d = got.info["distributed"]
    assert d["workers"] == 2 and d["blocks"] == got.info["blocks"] == ref.info["blocks"]
    if not extra:  # the goldens' choices: still upstream's stitched object
        assert rel(got.object, golden(case, "stitched")["object"][..., 0]) <= TOL


def test_one_worker_equals_one_process_bit_for_bit() -> None:
    ref = one_process("tf_N64_gs1", SPLIT)
    with cluster_client(workers=1) as c:
        got = reconstruct(archive("tf_N64_gs1"), DATASET, "onnx", client=c, **SPLIT)
        gs2 = reconstruct(archive("tf_N64_gs2_n15"), DATASET, "onnx", client=c, **CASES["tf_N64_gs2_n15"][1])
    assert np.array_equal(got.object, ref.object)
    assert got.info["distributed"]["workers"] == 1 and got.info["blocks"] == 13
    assert np.array_equal(gs2.object, one_process("tf_N64_gs2_n15", {}).object)
    assert rel(gs2.object, golden("tf_N64_gs2_n15", "stitched")["object"][..., 0]) <= TOL


def test_worker_refuses_an_archive_changed_after_the_client_verified_it(client: Any, tmp_path: Path) -> None:
    need_fixtures()
    path = tmp_path / "wts.h5.zip"
    shutil.copy(archive("tf_N64_gs1"), path)
    info = open_model(path)  # the client's check: this sha256
    shutil.copy(archive("torch_N64_gs1"), path)  # replaced before any worker opens it
    with pytest.raises(Exception) as exc:
        reconstruct(info, DATASET, "onnx", client=client)
    text = str(exc.value)
    assert type(exc.value).__name__ == "RemoteError"
    assert text.startswith("worker tcp://") and str(path) in text and info.sha256 in text, text


def test_dataset_workers_cannot_read_is_one_error_line(client: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads the scan; by the time the workers open it, it is gone: one line naming worker and path."""
    need_fixtures()
    from ptycho_bridge.ops.reconstruct import distributed as drv

    scan = tmp_path / "scan.npz"
    shutil.copy(DATASET, scan)
    real = drv.Driver.check_workers

    def moved_then_check(self: Any) -> None:
        scan.rename(tmp_path / "elsewhere.npz")
        real(self)

    monkeypatch.setattr(drv.Driver, "check_workers", moved_then_check)
    out = tmp_path / "rec"
    res = CliRunner().invoke(main, ["reconstruct", archive("tf_N64_gs1"), str(scan), "-o", str(out),
                                    "--scheduler", client.scheduler.address],
                             env={"PTYCHO_BRIDGE_NO_PROGRESS": "1"})
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("dask dashboard:")]
    assert len(lines) == 1 and lines[0].startswith("error: worker tcp://127.0.0.1:"), res.stderr
    assert "cannot read" in lines[0] and str(scan) in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.npz"]


def test_cli_scheduler_run_reports_the_cluster(client: Any, tmp_path: Path) -> None:
    need_fixtures()
    out = tmp_path / "rec"
    res = CliRunner().invoke(main, ["reconstruct", archive("tf_N64_gs2_n15"), str(DATASET), "-o", str(out),
                                    "--subsample", "100", "--n-groups", "15", "--scheduler",
                                    client.scheduler.address], env={"PTYCHO_BRIDGE_NO_PROGRESS": "1"})
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("dask dashboard: http")
    report = json.loads((out / "reconstruct.json").read_text())
    assert schema_errors("reconstruct-report", report) == []
    d = report["distributed"]
    assert d["scheduler"] == client.scheduler.address and d["workers"] == 2 and d["local_cluster"] is False
    assert d["blocks"] == 1 and set(d["worker_seconds"]) >= {"read", "model", "merge", "stitch"}
    with np.load(out / "object.npz") as z:
        assert np.array_equal(z["object"], one_process("tf_N64_gs2_n15", {}).object)


def test_scheduler_without_dashboard_runs_and_reports_null(client: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``Client.dashboard_link`` raises KeyError where the scheduler serves no dashboard: no line, ``dashboard`` null."""
    need_fixtures()
    from ptycho_bridge.ops.reconstruct.distributed import dashboard_link

    monkeypatch.setattr(distributed.Client, "dashboard_link", property(lambda self: {}["dashboard"]))
    assert dashboard_link(client) is None
    out = tmp_path / "rec"
    res = CliRunner().invoke(main, ["reconstruct", archive("tf_N64_gs2_n15"), str(DATASET), "-o", str(out),
                                    "--subsample", "100", "--n-groups", "15", "--scheduler",
                                    client.scheduler.address], env={"PTYCHO_BRIDGE_NO_PROGRESS": "1"})
    assert res.exit_code == 0, res.output
    assert "dask dashboard" not in res.stderr and "Traceback" not in res.output, res.stderr
    report = json.loads((out / "reconstruct.json").read_text())
    assert schema_errors("reconstruct-report", report) == []
    assert report["distributed"]["dashboard"] is None


def test_no_cache_reaches_the_workers_and_the_report(client: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``cache=False``, ``--no-cache`` and the client's PTYCHO_BRIDGE_NO_CACHE turn the graph cache off on the
    workers, and ``cache`` reports it as in one process (it was null on every cluster run)."""
    need_fixtures()
    from ptycho_bridge.ops import graph_cache

    off = {"status": "off", "path": None, "key": None, "reason": None}
    kw = {**CASES["tf_N64_gs2_n15"][1]}
    on = reconstruct(archive("tf_N64_gs2_n15"), DATASET, "onnx", client=client, threads=1, **kw)
    assert on.info["cache"] is not None and on.info["cache"]["status"] in ("hit", "miss", "rebuilt")
    got = reconstruct(archive("tf_N64_gs2_n15"), DATASET, "onnx", client=client, threads=1, cache=False, **kw)
    assert got.info["cache"] == off == one_process("tf_N64_gs2_n15", {"cache": False}).info["cache"]
    assert np.array_equal(got.object, on.object)
    monkeypatch.setenv(graph_cache.ENV_OFF, "1")  # set on the client only: the workers started without it
    env = reconstruct(archive("tf_N64_gs2_n15"), DATASET, "onnx", client=client, threads=1, **kw)
    assert env.info["cache"] == off
    monkeypatch.delenv(graph_cache.ENV_OFF)
    out = tmp_path / "rec"
    res = CliRunner().invoke(main, ["reconstruct", archive("tf_N64_gs2_n15"), str(DATASET), "-o", str(out),
                                    "--subsample", "100", "--n-groups", "15", "--no-cache", "--scheduler",
                                    client.scheduler.address], env={"PTYCHO_BRIDGE_NO_PROGRESS": "1"})
    assert res.exit_code == 0, res.output
    report = json.loads((out / "reconstruct.json").read_text())
    assert schema_errors("reconstruct-report", report) == [] and report["cache"] == off


def test_core_and_one_process_paths_do_not_import_dask() -> None:
    code = ("import sys; import ptycho_bridge.cli.reconstruct, ptycho_bridge.ops.reconstruct.pipeline; "
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_killed_worker_loses_nothing(client: Any) -> None:
    """Kill the worker that ran the first block once it is done: Dask reruns what it held; same bits."""
    ref = one_process("tf_N64_gs1", {"block_groups": 4, "centring_batch": 4})
    pids = client.run(os.getpid)
    killed: list[tuple[int, int, int]] = []

    def kill_first(stage: str, done: int, total: int) -> None:
        if stage == "reconstruct" and not killed:
            victim = sorted(pids)[0]
            os.kill(pids[victim], signal.SIGKILL)
            killed.append((pids[victim], done, total))

    got = reconstruct(archive("tf_N64_gs1"), DATASET, "onnx", client=client, threads=1, progress=kill_first,
                      block_groups=4, centring_batch=4)
    assert killed and killed[0][1] < killed[0][2]  # killed after the first block, with blocks still to run
    assert np.array_equal(got.object, ref.object)
    assert killed[0][0] not in client.run(os.getpid).values()  # the worker process really was replaced
    assert got.info["distributed"]["blocks"] == 25


def test_cluster_options_need_the_extra_and_exclude_each_other(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    need_fixtures()
    import importlib.util

    args = ["reconstruct", archive("tf_N64_gs1"), str(DATASET), "-o", str(tmp_path / "rec")]
    both = CliRunner().invoke(main, [*args, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert both.exit_code == 2 and "--scheduler or --workers" in both.output
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    res = CliRunner().invoke(main, [*args, "--workers", "2"])
    assert res.exit_code == 1
    assert res.stderr.strip() == ('error: reconstruct --scheduler/--workers needs distributed, which is not installed: '
                                  'pip install "ptycho-bridge[distributed]"')
    assert list(tmp_path.iterdir()) == []
