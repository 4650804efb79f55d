"""``IsolatedWorker`` (issue 23): one long-lived child per untrusted file, with run_isolated's guarantees per call."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from ptycho_bridge.errors import CorruptArchiveError, FormatError
from ptycho_bridge.io.h5_isolated import IsolatedWorker


def _setup(scale: float) -> dict:
    return {"scale": scale, "pid": os.getpid()}


def _handler(state: dict, op: str, arr: np.ndarray) -> object:
    if op == "scale":
        return arr * state["scale"]
    if op == "pid":
        return state["pid"]
    if op == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if op == "spin":
        while True:
            pass
    if op == "burn":  # 0.4 s of CPU
        import time

        end = time.process_time() + 0.4
        while time.process_time() < end:
            pass
        return 1
    raise FormatError("bad op", member="scan.h5", field=op)


def _bad_setup() -> None:
    raise FormatError("cannot open", member="scan.h5", field="setup")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_calls_share_one_child_and_return_arrays() -> None:
    w = IsolatedWorker(_setup, (2.0,), _handler, member="scan.h5")
    try:
        a = np.arange(12, dtype=">f4").reshape(3, 4)
        got = w.call("scale", a)
        np.testing.assert_array_equal(got, a * 2)
        pid = w.call("pid", a)
        assert pid != os.getpid() and w.call("pid", a) == pid and _alive(pid)  # one child for every call
        with pytest.raises(FormatError, match=r"scan\.h5 \[nope\]: bad op"):
            w.call("nope", a)
        assert w.call("pid", a) == pid  # an ArchiveError does not end the child
    finally:
        w.close()
    assert not _alive(pid)  # killed and reaped by close()


def test_crash_and_timeout_are_one_error_then_every_call_repeats_it() -> None:
    w = IsolatedWorker(_setup, (1.0,), _handler, member="scan.h5")
    x = np.zeros(2)
    with pytest.raises(CorruptArchiveError, match=r"scan\.h5: libhdf5 crashed \(SIGSEGV\)"):
        w.call("segv", x)
    with pytest.raises(CorruptArchiveError, match="SIGSEGV"):
        w.call("pid", x)
    w.close()
    w = IsolatedWorker(_setup, (1.0,), _handler, member="scan.h5", timeout=0.5)
    pid = w.call("pid", x)
    with pytest.raises(CorruptArchiveError, match=r"within 0\.5 s"):
        w.call("spin", x)
    assert not _alive(pid)  # killed and reaped on timeout
    with pytest.raises(CorruptArchiveError, match="within"):
        w.call("pid", x)
    w.close()


def test_setup_error_is_every_call_s_error() -> None:
    w = IsolatedWorker(_bad_setup, (), _handler, member="scan.h5")
    for _ in range(2):
        with pytest.raises(FormatError, match=r"\[setup\]: cannot open"):
            w.call("pid", np.zeros(1))
    w.close()


def test_cpu_limit_is_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call gets CPU_S seconds: calls may add up past it; one call spinning past it is killed (SIGXCPU)."""
    import ptycho_bridge.io.h5_isolated as iso

    monkeypatch.setattr(iso, "CPU_S", 1)
    w = IsolatedWorker(_setup, (1.0,), _handler, member="scan.h5", timeout=30)
    x = np.zeros(1)
    try:
        assert [w.call("burn", x) for _ in range(3)] == [1, 1, 1]  # 1.2 s of CPU in all, over CPU_S
        with pytest.raises(CorruptArchiveError, match="CPU limit"):
            w.call("spin", x)
    finally:
        w.close()


def test_a_forked_copy_never_signals_the_original_s_child() -> None:
    """A process forked while a worker is open (a Dask process worker) gets its own child; closing its copy (or
    garbage-collecting it) leaves the original's child running."""
    w = IsolatedWorker(_setup, (1.0,), _handler, member="scan.h5")
    x = np.zeros(1)
    try:
        pid = w.call("pid", x)
        r, wfd = os.pipe()
        fork = os.fork()
        if fork == 0:  # pragma: no cover - the forked copy
            code = 1
            try:
                other = w.call("pid", x)
                w.close()
                code = 0 if other != pid else 2
            finally:
                os.write(wfd, bytes([code]))
                os._exit(0)
        os.close(wfd)
        got = os.read(r, 1)
        os.close(r)
        os.waitpid(fork, 0)
        assert got == b"\x00"  # the copy started its own child and closed it
        assert _alive(pid) and w.call("pid", x) == pid  # the original's child is untouched
    finally:
        w.close()


def _raise_value_error(*_: object) -> None:
    raise ValueError("bad header")


def _exit_3(*_: object) -> None:
    os._exit(3)


def test_run_isolated_and_the_worker_word_their_errors_alike_but_for_the_verb() -> None:
    """One-line messages of both paths, exactly: a non-ArchiveError in the child, a non-zero exit, a signal."""
    from ptycho_bridge.io.h5_isolated import run_isolated

    x = np.zeros(1)
    with pytest.raises(CorruptArchiveError) as info:
        run_isolated(_raise_value_error, member="scan.h5")
    assert str(info.value) == "scan.h5: cannot parse HDF5 (ValueError: bad header)"
    with pytest.raises(CorruptArchiveError) as info:
        run_isolated(_exit_3, member="scan.h5")
    assert str(info.value) == ("scan.h5: libhdf5 failed while parsing this HDF5 file (isolated parser exited 3); "
                               "refused")
    with pytest.raises(CorruptArchiveError) as info:
        run_isolated(_handler, {}, "segv", x, member="scan.h5")
    assert str(info.value) == "scan.h5: libhdf5 crashed (SIGSEGV) while parsing this HDF5 file; refused"

    w = IsolatedWorker(_raise_value_error, (), _handler, member="scan.h5")
    with pytest.raises(CorruptArchiveError) as info:  # setup parses, like run_isolated
        w.call("pid", x)
    assert str(info.value) == "scan.h5: cannot parse HDF5 (ValueError: bad header)"
    w.close()
    w = IsolatedWorker(_setup, (1.0,), _raise_value_error, member="scan.h5")
    with pytest.raises(CorruptArchiveError) as info:  # each call reads
        w.call("pid", x)
    assert str(info.value) == "scan.h5: cannot read HDF5 (ValueError: bad header)"
    w.close()
    w = IsolatedWorker(_setup, (1.0,), _exit_3, member="scan.h5")
    with pytest.raises(CorruptArchiveError) as info:
        w.call("pid", x)
    assert str(info.value) == ("scan.h5: libhdf5 failed while reading this HDF5 file (isolated reader exited 3); "
                               "refused")
    w.close()
    w = IsolatedWorker(_setup, (1.0,), _handler, member="scan.h5")
    with pytest.raises(CorruptArchiveError) as info:
        w.call("segv", x)
    assert str(info.value) == "scan.h5: libhdf5 crashed (SIGSEGV) while reading this HDF5 file; refused"
    w.close()
