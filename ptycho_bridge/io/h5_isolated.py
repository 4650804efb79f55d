"""Run libhdf5 (h5py) on untrusted bytes in a forked child with resource limits and a timeout.

Why: libhdf5 is C code that was not written for hostile input. A two-byte change to a Keras
``model.weights.h5`` (the VLEN type field of a layer ``name`` attribute) makes it dereference garbage
(SIGSEGV), and a chunk B-tree node that points at itself makes it recurse until the stack is gone.
In-process, either kills the command (exit 139, no ``error:`` line). :func:`run_isolated` forks, runs
the parse in the child under ``RLIMIT_CPU``, ``RLIMIT_AS`` (the parent's address space plus a budget)
and no core dumps, and turns a signal, a non-zero exit or a timeout into a :class:`CorruptArchiveError`
naming the member. ``fork`` (not ``spawn``) keeps the cost to a few milliseconds: the child already has
numpy and h5py imported (``docs/performance.md``).

The result comes back through a pipe as a JSON header plus raw array bytes -- never a pickle, since the
child has run libhdf5 on archive bytes and is no more trusted than they are. Only plain JSON values,
numeric numpy arrays (checked dtype, size matching the bytes sent) and :class:`ArchiveError`
subclasses (by name, from an allowlist) cross back.
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import select
import signal
import struct
import threading
import time
import warnings
from typing import Any, Callable

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge import errors
from ptycho_bridge.errors import ArchiveError, CorruptArchiveError

TIMEOUT_S = 60.0  # wall clock per isolated parse
CPU_S = 60  # RLIMIT_CPU of the child (a fresh child's CPU time starts at zero)
MEMORY_BUDGET = 4 * 1024**3  # RLIMIT_AS: the address space the child had at fork plus this
MAX_RESULT = 4 * 1024**3  # bytes the parent accepts back (tensors of one weights member)
ISOLATE_ENV = "PTYCHO_BRIDGE_H5_IN_PROCESS"  # "1": run in-process (debugging only; no crash protection)

_ERRORS = {cls.__name__: cls for cls in (
    errors.CorruptArchiveError, errors.UnsafeArchiveError, errors.ArchiveLimitError, errors.PickleDecodeError,
    errors.FormatError, errors.SpecError, errors.ChecksumError, errors.UnsupportedError,
)}
_HEADER = struct.Struct("<Q")


def run_isolated(fn: Callable[..., Any], *args: Any, member: str, timeout: float = TIMEOUT_S) -> Any:
    """``fn(*args)`` run in a forked child; its result (plain data and numeric arrays) or its ArchiveError.

    A crash, a non-zero exit, an unreadable result or ``timeout`` seconds without one become one
    :class:`CorruptArchiveError` naming ``member``.
    """
    if os.environ.get(ISOLATE_ENV) == "1":
        return fn(*args)
    import h5py  # noqa: F401 - imported once here and inherited by every child, not re-imported per fork

    rfd, wfd = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns when forking a threaded process; the child only parses
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage cannot follow os._exit
        os.close(rfd)
        status = 0
        try:
            _limit_child()
            try:
                payload = _encode({"ok": fn(*args)})
            except Exception as exc:  # an ArchiveError, or one of h5py's many exception types on corrupt metadata
                payload = _encode({"error": _failure(exc, "parse", member)})
            with os.fdopen(wfd, "wb") as out:
                out.write(payload)
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(wfd)
    try:
        data = _read_all(rfd, pid, timeout, member)
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0 or not data:
        raise _exit_error(status, "parsing", member)
    return _result(data, member)


def _failure(exc: Exception, verb: str, member: str) -> list[Any]:
    """(child) ``exc`` as the ``"error"`` list sent back: an ArchiveError by class name, anything else (h5py's
    exception types on corrupt metadata) as a CorruptArchiveError "cannot {verb} HDF5 (...)" naming ``member``."""
    if isinstance(exc, ArchiveError):
        return [type(exc).__name__, exc.reason, exc.member, exc.field]
    return ["CorruptArchiveError", f"cannot {verb} HDF5 ({exc.__class__.__name__}: {exc})"[:500], member, None]


def _result(data: bytearray, member: str) -> Any:
    """(parent) The child's answer: its ``"ok"`` value, or its error raised again (allowlisted classes only)."""
    doc = _decode(data, member)
    if "error" in doc:
        name, reason, err_member, field = doc["error"]
        cls = _ERRORS.get(name, CorruptArchiveError)
        raise cls(str(reason), member=err_member if isinstance(err_member, str) else member,
                  field=field if isinstance(field, str) else None)
    return doc["ok"]


_AGENT = {"parsing": "parser", "reading": "reader"}


def _exit_error(status: int, doing: str, member: str) -> CorruptArchiveError:
    """(parent) A child's end (its wait status) as one line; ``doing``: "parsing" (:func:`run_isolated`) or
    "reading" (:class:`IsolatedWorker`)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        why = "hit its CPU limit" if sig == signal.SIGXCPU else f"crashed ({name})"
        return CorruptArchiveError(f"libhdf5 {why} while {doing} this HDF5 file; refused", member=member)
    return CorruptArchiveError(f"libhdf5 failed while {doing} this HDF5 file (isolated {_AGENT[doing]} exited "
                               f"{os.WEXITSTATUS(status) if os.WIFEXITED(status) else '?'}); refused", member=member)


def _limit_child(cpu: bool = True) -> None:
    """No core dumps, the address-space cap, and (``cpu``) :data:`CPU_S` of CPU for the child's whole life."""
    faulthandler.disable()  # a crash here is reported by the parent as one line, not a C traceback
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S + 1))
    try:
        with open("/proc/self/statm", "rb") as fh:
            vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm + MEMORY_BUDGET
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft == resource.RLIM_INFINITY or cap < soft:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):  # no /proc (not Linux): CPU limit and timeout still hold
        pass


def _read_all(fd: int, pid: int, timeout: float, member: str) -> bytearray:
    deadline = time.monotonic() + timeout
    out = bytearray()  # writable, so the arrays handed back are writable views (torch wants that)
    while True:
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise CorruptArchiveError(f"libhdf5 did not finish parsing this HDF5 file within {timeout:g} s; refused",
                                      member=member)
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return out
        out += chunk
        if len(out) > MAX_RESULT + (1 << 24):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise CorruptArchiveError("isolated HDF5 parse returned more data than allowed", member=member)


# -- the wire format: JSON header (arrays as references) + raw array bytes ---------------------------
def _encode(doc: Any) -> bytes:
    blobs: list[bytes] = []

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            blobs.append(arr.tobytes())
            return {"__nd__": len(blobs) - 1, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)

    header = json.dumps({"doc": plain(doc), "sizes": [len(b) for b in blobs]}).encode("utf-8")
    return _HEADER.pack(len(header)) + header + b"".join(blobs)


def _decode(data: bytearray, member: str) -> Any:
    def bad(why: str) -> CorruptArchiveError:
        return CorruptArchiveError(f"isolated HDF5 parse returned an unreadable result ({why})", member=member)

    if len(data) < _HEADER.size:
        raise bad("short")
    (hlen,) = _HEADER.unpack_from(data)
    if hlen > len(data) - _HEADER.size:
        raise bad("header length")
    try:
        head = json.loads(data[_HEADER.size:_HEADER.size + hlen])
    except (ValueError, RecursionError):
        raise bad("header") from None
    sizes = head.get("sizes") if isinstance(head, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise bad("sizes")
    starts, pos = [], _HEADER.size + hlen
    for s in sizes:
        starts.append(pos)
        pos += s
    if pos != len(data):
        raise bad("length")
    view = memoryview(data)

    def revive(value: Any) -> Any:
        if isinstance(value, dict):
            if "__nd__" in value:
                i, dtype, shape = value.get("__nd__"), value.get("dtype"), value.get("shape")
                if not (isinstance(i, int) and 0 <= i < len(sizes) and isinstance(dtype, str)
                        and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
                    raise bad("array reference")
                try:
                    dt = np.dtype(dtype)
                except TypeError:
                    raise bad(f"dtype {dtype!r:.40}") from None
                if dt.kind not in "biufc" or dt.hasobject:
                    raise bad(f"dtype {dtype!r:.40}")
                count = 1
                for d in shape:
                    count *= d
                if count * dt.itemsize != sizes[i]:
                    raise bad("array size")
                return np.frombuffer(view[starts[i]:starts[i] + sizes[i]], dtype=dt).reshape(shape)
            return {k: revive(v) for k, v in value.items()}
        if isinstance(value, list):
            return [revive(v) for v in value]
        return value

    doc = revive(head.get("doc"))
    if not isinstance(doc, dict) or not ({"ok"} <= set(doc) or "error" in doc):
        raise bad("document")
    if "error" in doc and not (isinstance(doc["error"], list) and len(doc["error"]) == 4):
        raise bad("error")
    return doc


class IsolatedWorker:
    """One forked child that opens an untrusted file once and answers many calls: :func:`run_isolated` without a
    fork per call.

    Why: reading an HDF5 scan block by block through :func:`run_isolated` costs a fork, an ``h5py.File`` open and a
    dataset check per block (7-40 ms; a 50,000-pattern scan read in blocks of 64 pays it ~800 times). Here
    ``setup(*setup_args)`` runs once in the child and ``handler(state, *args)`` once per :meth:`call`. The
    guarantees are :func:`run_isolated`'s: the same address-space cap, no core dump, ``timeout`` seconds of wall
    clock per call and :data:`CPU_S` seconds of CPU per call (the child raises its own soft limit between calls,
    in code that runs before it reads the next request), results as JSON plus raw numeric arrays (never a
    pickle), a crash or a timeout is one :class:`CorruptArchiveError` naming ``member``, after which every call
    fails the same way. Requests travel in the same format the other way. The child exits when the parent closes
    the worker or its request pipe reaches end of file (the parent died).
    """

    def __init__(self, setup: Callable[..., Any], setup_args: tuple[Any, ...], handler: Callable[..., Any], *,
                 member: str, timeout: float = TIMEOUT_S) -> None:
        self.setup, self.setup_args, self.handler = setup, setup_args, handler
        self.member, self.timeout = member, timeout
        self._pid: int | None = None
        self._req = self._resp = -1
        self._dead: CorruptArchiveError | None = None
        self._state: Any = None  # in-process mode only (ISOLATE_ENV)
        self._owner = os.getpid()  # the process whose child _pid is (a forked copy must not signal it)
        self._lock = threading.Lock()

    # -- parent side ----------------------------------------------------------------------------------------
    def call(self, *args: Any) -> Any:
        """``handler(state, *args)`` in the child; its result or its ArchiveError."""
        with self._lock:
            if os.environ.get(ISOLATE_ENV) == "1":
                if self._state is None:
                    self._state = self.setup(*self.setup_args)
                return self.handler(self._state, *args)
            if self._pid is not None and self._owner != os.getpid():
                self._forget()  # a forked copy of this worker (a Dask process worker): the child is the parent's
            if self._dead is not None:
                raise self._dead
            if self._pid is None:
                self._start()
            try:
                _write_frame(self._req, _encode({"ok": list(args)}))
                data = self._read_frame()
            except CorruptArchiveError as exc:
                self._dead = exc
                self._stop()
                raise
            except OSError:  # EPIPE: the child is gone
                self._dead = self._why_dead()
                raise self._dead from None
            return _result(data, self.member)

    def close(self) -> None:
        """Stop the child (idempotent)."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        import h5py  # noqa: F401 - imported here, inherited by the child

        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; coverage cannot follow os._exit
            os.close(req_w)
            os.close(resp_r)
            status = 0
            try:
                _limit_child(cpu=False)  # the CPU limit is set per call, in _serve
                self._serve(req_r, resp_w)
            except BaseException:
                status = 70
            finally:
                os._exit(status)
        os.close(req_r)
        os.close(resp_w)
        self._pid, self._req, self._resp, self._owner = pid, req_w, resp_r, os.getpid()

    def _serve(self, req: int, resp: int) -> None:  # pragma: no cover - runs in the child
        try:
            state, failure = self.setup(*self.setup_args), None
        except Exception as exc:  # an ArchiveError, or one of h5py's many exception types on corrupt metadata
            state, failure = None, _failure(exc, "parse", self.member)
        while True:
            frame = _read_frame_blocking(req)
            if frame is None:
                return
            used = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(used.ru_utime + used.ru_stime) + 1 + CPU_S  # CPU_S more seconds for this call
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
            if failure is not None:
                payload = _encode({"error": failure})
            else:
                try:
                    args = _decode(frame, self.member)["ok"]
                    payload = _encode({"ok": self.handler(state, *args)})
                except Exception as exc:
                    payload = _encode({"error": _failure(exc, "read", self.member)})
            _write_frame(resp, payload)

    def _read_frame(self) -> bytearray:
        deadline = time.monotonic() + self.timeout
        head = self._read_exact(_HEADER.size, deadline)
        (size,) = _HEADER.unpack(bytes(head))
        if size > MAX_RESULT + (1 << 24):
            raise CorruptArchiveError("isolated HDF5 read returned more data than allowed", member=self.member)
        return self._read_exact(size, deadline)

    def _read_exact(self, n: int, deadline: float) -> bytearray:
        out = bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            ready = select.select([self._resp], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                raise CorruptArchiveError(f"libhdf5 did not finish reading this HDF5 file within {self.timeout:g} s; "
                                          "refused", member=self.member)
            chunk = os.read(self._resp, min(n - len(out), 1 << 20))
            if not chunk:
                raise self._why_dead()
            out += chunk
        return out

    def _why_dead(self) -> CorruptArchiveError:
        """The child's end, as the error every later call repeats."""
        status = 0
        if self._pid is not None:
            try:
                _, status = os.waitpid(self._pid, 0)
            except ChildProcessError:
                status = 0
            self._pid = None
        return _exit_error(status, "reading", self.member)

    def _forget(self) -> None:
        """Drop the pipes without touching the child: in a forked copy, the child belongs to the original."""
        for fd in (self._req, self._resp):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req = self._resp = -1
        self._pid = None

    def _stop(self) -> None:
        pid, owned = self._pid, self._owner == os.getpid()
        self._forget()  # closes the pipes and clears _pid; a forked copy leaves the child to the original
        if pid is not None and owned:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def __del__(self) -> None:  # a worker never closed (an exception path) does not leave its child behind
        try:
            self._stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _write_frame(fd: int, payload: bytes) -> None:
    for part in (_HEADER.pack(len(payload)), payload):  # two writes: no copy of a large payload
        view = memoryview(part)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _read_frame_blocking(fd: int) -> bytearray | None:  # pragma: no cover - the child's side
    def exact(n: int) -> bytearray | None:
        out = bytearray()
        while len(out) < n:
            chunk = os.read(fd, min(n - len(out), 1 << 20))
            if not chunk:
                return None
            out += chunk
        return out

    head = exact(_HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(bytes(head))
    return exact(size)
