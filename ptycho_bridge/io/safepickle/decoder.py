"""The decoder: an inert tree (:mod:`.nodes`) -> plain data, with numpy alone and nothing called.

With ``defer`` (``inspect``), arrays come out as :class:`~ptycho_bridge.io.deferred.DeferredArray`:
checked in full, copied into an ndarray only when used, so reading an archive's metadata imports no numpy.

Why: this is the walk every decoded value goes through: containers and scalars as themselves,
dataclass-like objects as :class:`Record`, known globals through the table of :mod:`.handlers`,
everything else as :class:`Opaque` so that reports can name it. The array builders here are where the
array-bytes budget and the dtype allow-list are enforced, whichever handler asks for an array.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ptycho_bridge.errors import ArchiveLimitError, PickleDecodeError
from ptycho_bridge.io.deferred import DeferredArray, itemsize
from ptycho_bridge.io.safepickle.layout import NUMPY_DTYPE_KINDS, NUMPY_DTYPE_STR, NUMPY_PLAIN_CODES
from ptycho_bridge.io.safepickle.limits import HashGuard, PickleLimits
from ptycho_bridge.io.safepickle.nodes import (
    Build,
    Call,
    Global,
    Instance,
    PersistentRef,
    Reduce,
    callee,
    name_of,
)
from ptycho_bridge.io.safepickle.reprs import short_repr
from ptycho_bridge.io.safepickle.storage import TensorStorage
from ptycho_bridge.lazy import is_loaded
from ptycho_bridge.lazy import numpy as np


@dataclass(eq=False)
class Record:
    """A dataclass/namespace-like object reduced to its type name and fields (never instantiated)."""

    type_name: str
    fields: dict[str, Any]


@dataclass(eq=False)
class Opaque:
    """A value the decoder does not recognise, kept inert for reports.

    ``kind`` says what the pickle held: ``global`` (a bare reference), ``call`` (REDUCE),
    ``instance`` (NEWOBJ/OBJ/INST), ``build`` (BUILD on a non-object) or ``persistent`` (unresolved
    persistent id); ``raw`` is the inert record itself.
    """

    type_name: str
    kind: str = "global"
    raw: Any = field(repr=False, default=None)


class Decoder:
    """One decode of one inert tree: the generic walk, record shapes, and numpy/torch array builders.

    Calls to a known global go to ``handlers[module.name]`` (see :mod:`.handlers`), which may answer
    ``NotImplemented`` to leave the call :class:`Opaque`. ``done`` maps ids of decoded nodes to their
    result so shared sub-trees decode once and stay shared; ``spent`` counts array bytes against
    :attr:`PickleLimits.max_array_bytes`.
    """

    def __init__(self, member: str, limits: PickleLimits, handlers: Mapping[str, DecodeHandler], *,
                 defer: bool = False) -> None:
        self.member = member
        # hand out torch tensors and plain numpy arrays as DeferredArray (checked now, built on use)
        self.defer = defer
        self.limits = limits
        self.handlers = handlers
        self.done: dict[int, Any] = {}
        self.busy: set[int] = set()
        self.spent = 0
        self.hashing = HashGuard(limits, member)

    def fail(self, message: str) -> PickleDecodeError:
        return PickleDecodeError(message, member=self.member)

    def spend(self, nbytes: int) -> None:
        self.spent += nbytes
        if self.spent > self.limits.max_array_bytes:
            raise ArchiveLimitError(
                f"decoded arrays exceed {self.limits.max_array_bytes} bytes in total", member=self.member
            )

    # -- generic walk ------------------------------------------------------------------------------
    def decode(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, DeferredArray)):
            return value
        if is_loaded("numpy") and isinstance(value, (np.ndarray, np.generic)):  # never true before numpy loads
            return value
        if isinstance(value, bytearray):
            return bytes(value)
        if depth > self.limits.max_depth:
            raise ArchiveLimitError(f"pickle nested deeper than {self.limits.max_depth} levels", member=self.member)
        key = id(value)
        if key in self.done:
            return self.done[key]
        if key in self.busy:
            raise self.fail("pickle holds a self-referencing structure")
        self.busy.add(key)
        try:
            result = self._decode(value, depth + 1)
        finally:
            self.busy.discard(key)
        self.done[key] = result
        return result

    def _decode(self, value: Any, depth: int) -> Any:
        if isinstance(value, list):
            return [self.decode(item, depth) for item in value]
        if isinstance(value, tuple):
            return tuple(self.decode(item, depth) for item in value)
        if isinstance(value, dict):
            return self.mapping(value.items(), depth)
        if isinstance(value, (set, frozenset)):
            return type(value)(self.unique(self.decode(item, depth) for item in value))
        if isinstance(value, Global):
            return Opaque(value.dotted, "global", value)
        if isinstance(value, Call):
            return self.call(value, depth)
        if isinstance(value, TensorStorage):
            self.spend(len(value.raw))
            return np.array(value.as_array(value.dtype, member=self.member))
        if isinstance(value, PersistentRef):
            return Opaque("<persistent id>", "persistent", value)
        if isinstance(value, Build):
            return Opaque(name_of(value.target), "build", value)
        return value  # something a caller's persistent_load produced; theirs to interpret

    def mapping(self, pairs: Iterable[tuple[Any, Any]], depth: int) -> dict:
        """Decoded (key, value) pairs as a dict, bounding the hash cost of the keys (:class:`HashGuard`)."""
        out: dict = {}
        for k, v in pairs:
            key = self.decode(k, depth)
            self.hashing.insert(out, key)
            out[key] = self.decode(v, depth)
        self.hashing.release(out)
        return out

    def unique(self, items: Iterable[Any]) -> set:
        """Decoded values about to be hashed (set items) as a set, bounding the hash cost (:class:`HashGuard`)."""
        out: set = set()
        for item in items:
            self.hashing.insert(out, item)
            out.add(item)
        self.hashing.release(out)
        return out

    # -- recognised calls --------------------------------------------------------------------------
    def call(self, node: Call, depth: int) -> Any:
        func = callee(node)
        name = func.dotted if isinstance(func, Global) else None
        handler = self.handlers.get(name) if name else None
        if handler is not None:
            result = handler(self, node, depth)
            if result is not NotImplemented:
                return result
        elif name:
            record = self.record(node, name, depth)
            if record is not None:
                return record
        return Opaque(name_of(node), "call" if isinstance(node, Reduce) else "instance", node)

    def plain_args(self, node: Call, depth: int, *, counts: tuple[int, ...] | None) -> tuple | None:
        """Decoded args when the call has no extra items/kwargs and an expected arity, else None."""
        if node.items or node.appends or (isinstance(node, Instance) and node.kwargs):
            return None
        if counts is not None and len(node.args) not in counts:
            return None
        return tuple(self.decode(a, depth) for a in node.args)

    def fields(self, state: Any, depth: int) -> dict[str, Any] | None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            merged: dict = dict(state[0] or {})
            if isinstance(state[1], dict):
                merged.update(state[1])
            state = merged
        if state is None:
            state = {}
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            return None
        return {k: self.decode(v, depth) for k, v in state.items()}

    def record(self, node: Call, name: str, depth: int) -> Record | None:
        """``NEWOBJ(cls, ())`` + ``BUILD(dict)`` and friends → :class:`Record`; None when not that shape."""
        if node.items or node.appends:
            return None
        if isinstance(node, Instance) and not node.args and not node.kwargs:
            cls_name = name
        elif (
            name == "copyreg._reconstructor"
            and len(node.args) == 3
            and isinstance(node.args[0], Global)
            and isinstance(node.args[1], Global)
            and node.args[1].dotted == "builtins.object"
            and node.args[2] is None
        ):
            cls_name = node.args[0].dotted
        elif name in ("types.SimpleNamespace", "argparse.Namespace") and not node.args:
            cls_name = name
        else:
            return None
        fields = self.fields(node.state, depth)
        return None if fields is None else Record(cls_name, fields)

    # -- numpy -------------------------------------------------------------------------------------
    def dtype(self, value: Any, depth: int, *, light: bool = False) -> Any:
        """The dtype a pickled ``numpy.dtype(...)`` call describes: an ``np.dtype``, or with ``light``
        (deferred decoding) its numpy name when it is a plain native-order number type (no numpy needed)."""
        if is_loaded("numpy") and isinstance(value, np.dtype):
            return value
        if not (isinstance(value, Reduce) and value.func == Global("numpy", "dtype")):
            raise self.fail(f"expected a numpy dtype, found {name_of(value)}")
        return self.make_dtype(value, depth, light=light)

    def make_dtype(self, node: Call, depth: int, *, light: bool = False) -> Any:
        args = tuple(self.decode(a, depth) for a in node.args)
        if not args or not isinstance(args[0], str) or not NUMPY_DTYPE_STR.fullmatch(args[0]):
            raise self.fail(f"unsupported numpy dtype arguments {short_repr(args)}")
        if args[0][0] in "OV":
            raise self.fail(f"numpy dtype {args[0]!r} (object or structured) refused")
        state = self.decode(node.state, depth)
        if light and args[0] in NUMPY_PLAIN_CODES and sys.byteorder == "little" and (
                state is None or (isinstance(state, tuple) and len(state) >= 8 and state[1] in ("<", "|", "=")
                                  and state[2:5] == (None, None, None))):
            return NUMPY_PLAIN_CODES[args[0]]
        dt = np.dtype(args[0])
        if state is not None:
            if not isinstance(state, tuple) or len(state) < 8:
                raise self.fail("unsupported numpy dtype state")
            _, endian, subarray, names, fields, elsize = state[:6]
            if subarray is not None or names is not None or fields is not None:
                raise self.fail("structured numpy dtypes are refused")
            if dt.kind in "SU" and isinstance(elsize, int) and elsize > 0 and elsize != dt.itemsize:
                dt = np.dtype(f"{dt.kind}{elsize // (4 if dt.kind == 'U' else 1)}")
            if endian in ("<", ">"):
                dt = dt.newbyteorder(endian)
            elif endian not in ("|", "="):
                raise self.fail(f"bad numpy byte order {short_repr(endian)}")
        if dt.kind not in NUMPY_DTYPE_KINDS or dt.hasobject or dt.fields is not None or dt.itemsize == 0:
            raise self.fail(f"numpy dtype {dt.str!r} refused (only bool/int/float/complex/bytes/str)")
        return dt

    def ndarray(self, shape: Any, dt: Any, order: str, raw: Any) -> Any:
        """The array of ``shape``, dtype ``dt`` (an ``np.dtype``, or a plain dtype's name from
        :meth:`make_dtype` with ``light``: then a :class:`DeferredArray`) and ``order`` from ``raw``."""
        if isinstance(raw, bytearray):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            raise self.fail(f"array data is {type(raw).__name__}, expected bytes (object arrays are refused)")
        if (
            not isinstance(shape, tuple)
            or len(shape) > 64
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise self.fail(f"bad array shape {short_repr(shape)}")
        count = math.prod(shape)
        size = itemsize(dt) if isinstance(dt, str) else dt.itemsize
        if len(raw) != count * size:
            raise self.fail(
                f"array data holds {len(raw)} bytes, shape {shape} of {dt} needs {count * size}"
            )
        self.spend(len(raw))
        if isinstance(dt, str):
            data = raw
            return DeferredArray(shape, dt, lambda: self._copy_array(shape, np.dtype(dt), order, data),
                                 key=(shape, dt, order, raw))
        return self._copy_array(shape, dt, order, raw)

    @staticmethod
    def _copy_array(shape: tuple[int, ...], dt: np.dtype, order: str, raw: bytes) -> np.ndarray:
        count = math.prod(shape)
        flat = np.frombuffer(raw, dtype=dt, count=count) if count else np.empty(0, dtype=dt)
        return np.array(flat.reshape(shape, order=order), copy=True, order=order)

    def array_from_state(self, state: Any, depth: int) -> np.ndarray:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise self.fail("unsupported ndarray state")
        if len(state) == 5:
            state = state[1:]
        shape, dt, fortran, raw = state
        shape = self.decode(shape, depth)
        dt = self.dtype(dt, depth, light=self.defer)
        raw = self.decode(raw, depth)
        return self.ndarray(shape, dt, "F" if fortran else "C", raw)

    # -- torch -------------------------------------------------------------------------------------
    def tensor(self, storage: TensorStorage, offset: Any, size: Any, stride: Any, dtype: str, meta: Any) -> Any:
        """A torch tensor (``_rebuild_tensor*``) as a C-ordered copy of its storage view; every check on
        its geometry runs here, so a :class:`DeferredArray` (``defer``) only waits for the copy."""
        numel = storage.numel(dtype, member=self.member)
        out_dtype = "float32" if dtype == "bfloat16" else dtype  # bfloat16 is widened exactly to float32
        out_size = itemsize(out_dtype)

        def ints(v: Any) -> bool:
            return isinstance(v, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v)

        if not (isinstance(offset, int) and offset >= 0 and ints(size) and ints(stride)
                and len(size) == len(stride) <= 64):
            raise self.fail(f"bad tensor geometry offset={short_repr(offset)} size={short_repr(size)} "
                            f"stride={short_repr(stride)}")
        flags = [flag for flag, on in (meta or {}).items() if on]
        for flag in flags:
            if flag not in ("conj", "neg"):
                raise self.fail(f"unsupported tensor metadata {short_repr(flag)}")
        count = math.prod(size)
        if count:
            extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
            if extent > numel:
                raise self.fail(
                    f"storage smaller than tensor: storage {storage.key} holds {numel} {dtype} elements, "
                    f"tensor needs {extent} (offset {offset}, size {size}, stride {stride})"
                )
            nbytes = count * out_size
            if nbytes > max(numel * out_size, self.limits.max_broadcast_bytes):
                # stride 0 / overlapping strides: a 4-byte storage viewed as a 2.5 GB tensor is refused here,
                # before anything is materialised; a real state dict never reads an element twice
                raise ArchiveLimitError(
                    f"tensor of {nbytes} bytes views storage {storage.key} of {numel * out_size} bytes (stride {stride}): "
                    f"a broadcast view larger than {self.limits.max_broadcast_bytes} bytes is refused", member=self.member
                )
            self.spend(nbytes)
        member = self.member

        def build() -> np.ndarray:
            flat = storage.as_array(dtype, member=member)
            if not count:
                return np.empty(size, dtype=flat.dtype)
            view = np.lib.stride_tricks.as_strided(
                flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
            )
            out = np.array(view, copy=True, order="C")
            for flag in flags:
                out = np.conj(out) if flag == "conj" else np.negative(out)
            return out

        return DeferredArray(size, out_dtype, build) if self.defer else build()


# a handler for calls to one global: (decoder, call record, depth) -> plain value, or NotImplemented
DecodeHandler = Callable[[Decoder, Call, int], Any]
