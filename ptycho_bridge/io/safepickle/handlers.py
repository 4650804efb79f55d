"""The globals the decoder turns into plain data, one small handler each, and their lookup table.

Why: a pickle names what to call by ``module.name``; this table is the whole allow-list of names
whose calls become data (numpy arrays, dtypes and scalars; TF eager tensors; torch tensors, sizes and
devices; ``OrderedDict``, sets, bytes, complex numbers, paths). A handler checks the exact shape of the
call and answers ``NotImplemented`` for anything else, which leaves the call :class:`~.decoder.Opaque`
and so reported; nothing named by the pickle is ever imported or called.
"""

from __future__ import annotations

from typing import Any

from ptycho_bridge.io.deferred import DeferredArray
from ptycho_bridge.io.safepickle.decoder import DecodeHandler, Decoder
from ptycho_bridge.io.safepickle.layout import (
    NUMPY_CORE,
    NUMPY_NUMERIC,
    PATH_CLASSES,
    TORCH_DTYPE_ALIASES,
)
from ptycho_bridge.io.safepickle.nodes import (
    Call,
    Global,
    Instance,
    Reduce,
    callee,
    name_of,
)
from ptycho_bridge.io.safepickle.reprs import short_repr
from ptycho_bridge.io.safepickle.storage import TensorStorage
from ptycho_bridge.lazy import is_loaded
from ptycho_bridge.lazy import numpy as np


def _h_ordered_dict(d: Decoder, node: Call, depth: int) -> Any:
    if isinstance(node, Instance) and node.kwargs:
        return NotImplemented
    if len(node.args) > 1 or node.appends or not (node.state is None or isinstance(node.state, dict)):
        return NotImplemented
    pairs: list[tuple[Any, Any]] = []
    if node.args:
        init = node.args[0]
        if isinstance(init, dict):
            pairs.extend(init.items())
        elif isinstance(init, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in init):
            pairs.extend((p[0], p[1]) for p in init)
        else:
            return NotImplemented
    pairs.extend(node.items)
    # BUILD state (torch's `_metadata` attribute on state dicts) is instance attributes, not items: dropped.
    return d.mapping(pairs, depth)


def _h_reconstruct(d: Decoder, node: Call, depth: int) -> Any:
    if isinstance(node, Instance) or node.items or node.appends or len(node.args) != 3:
        return NotImplemented
    if node.args[0] != Global("numpy", "ndarray"):
        return NotImplemented  # an ndarray subclass (matrix, memmap …): not plain data
    return d.array_from_state(node.state, depth)


def _h_create_array(d: Decoder, node: Call, depth: int) -> Any:
    """dill's ``_create_array(f, args, state, npdict)``: ``f(*args)`` then ``__setstate__(state)``."""
    if node.items or node.appends or len(node.args) != 4:
        return NotImplemented
    f, args, state, npdict = node.args
    if not (isinstance(f, Global) and f.module in NUMPY_CORE and f.name == "_reconstruct"):
        return NotImplemented
    if not (isinstance(args, tuple) and args and args[0] == Global("numpy", "ndarray")):
        return NotImplemented
    if npdict not in (None, {}):
        return NotImplemented
    return d.array_from_state(state, depth)


def _h_frombuffer(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(4,))
    if args is None:
        return NotImplemented
    buf, _, shape, order = args
    if order not in ("C", "F"):
        raise d.fail(f"bad array order {short_repr(order)}")
    return d.ndarray(shape, d.dtype(node.args[1], depth, light=d.defer), order, buf)


def _h_scalar(d: Decoder, node: Call, depth: int) -> Any:
    if node.items or node.appends or len(node.args) != 2 or isinstance(node, Instance):
        return NotImplemented
    dt = d.dtype(node.args[0], depth)
    raw = d.decode(node.args[1], depth)
    if not isinstance(raw, bytes) or len(raw) != dt.itemsize:
        raise d.fail(f"numpy scalar of {dt} needs {dt.itemsize} bytes of data")
    return np.frombuffer(raw, dtype=dt, count=1)[0].copy()


def _h_dtype(d: Decoder, node: Call, depth: int) -> Any:
    if isinstance(node, Instance) or node.items or node.appends:
        return NotImplemented
    return d.make_dtype(node, depth)


def _h_convert_to_tensor(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(1,))
    if args is None or not (isinstance(args[0], DeferredArray)
                            or (is_loaded("numpy") and isinstance(args[0], (np.ndarray, np.generic)))):
        return NotImplemented
    return args[0]


def _h_path(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=None)
    if args is None or not all(isinstance(a, str) for a in args) or node.state is not None:
        return NotImplemented
    return str(PATH_CLASSES[callee(node).dotted](*args))


def _h_set(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(0, 1))
    if args is None or node.state is not None or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
        return NotImplemented
    kind = frozenset if callee(node).name == "frozenset" else set
    return kind(d.unique(args[0] if args else ()))


def _h_bytes(d: Decoder, node: Call, depth: int) -> Any:
    """``bytes()``/``bytearray(b)``/``bytearray(text, 'latin-1')`` as protocols 0-4 write them → bytes."""
    args = d.plain_args(node, depth, counts=(0, 1, 2))
    if args is None:
        return NotImplemented
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    return NotImplemented


def _h_complex(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(1, 2))
    if args is None or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        return NotImplemented
    return complex(*args)


def _h_codecs_encode(d: Decoder, node: Call, depth: int) -> Any:
    """Protocol 0-2 pickles store bytes as ``_codecs.encode(latin1_text, 'latin1')``."""
    args = d.plain_args(node, depth, counts=(2,))
    if args is None or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        return NotImplemented
    return args[0].encode("latin-1")


def _h_rebuild_tensor(d: Decoder, node: Call, depth: int) -> Any:
    """``_rebuild_tensor(storage, offset, size, stride)``, ``_v2(…, requires_grad, hooks[, metadata])``,
    ``_v3(…, requires_grad, hooks, dtype[, metadata])``."""
    version = callee(node).name
    counts = {"_rebuild_tensor": (4,), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7, 8)}[version]
    if node.items or node.appends or isinstance(node, Instance) or len(node.args) not in counts:
        return NotImplemented
    storage = node.args[0]
    if not isinstance(storage, TensorStorage):
        return NotImplemented  # storage not resolved (no persistent_load): stays opaque
    offset, size, stride = (d.decode(a, depth) for a in node.args[1:4])
    rest = node.args[4:]
    dtype, meta = storage.dtype, None
    if version == "_rebuild_tensor_v3":
        tag = rest[2]
        if not (isinstance(tag, Global) and tag.module == "torch"):
            raise d.fail(f"tensor dtype is {name_of(tag)}, expected a torch dtype")
        dtype = TORCH_DTYPE_ALIASES.get(tag.name, tag.name)
        meta = d.decode(rest[3], depth) if len(rest) > 3 else None
    elif version == "_rebuild_tensor_v2" and len(rest) > 2:
        meta = d.decode(rest[2], depth)
    if len(rest) > 1 and d.decode(rest[1], depth) not in ({}, None):
        return NotImplemented  # backward hooks: keep the whole tensor opaque so it is reported
    if meta is not None and not isinstance(meta, dict):
        raise d.fail("tensor metadata is not a dict")
    return d.tensor(storage, offset, size, stride, dtype, meta)


def _h_rebuild_parameter(d: Decoder, node: Call, depth: int) -> Any:
    if node.items or node.appends or isinstance(node, Instance) or len(node.args) not in (3, 4):
        return NotImplemented
    if len(node.args) == 4 and d.decode(node.args[3], depth) not in ({}, None):
        return NotImplemented
    return d.decode(node.args[0], depth)


def _h_rebuild_from_type(d: Decoder, node: Call, depth: int) -> Any:
    """``_rebuild_from_type_v2(func, new_type, args, state)`` for plain tensors/parameters only."""
    if node.items or node.appends or isinstance(node, Instance) or len(node.args) != 4:
        return NotImplemented
    func, new_type, args, state = node.args
    plain = (Global("torch", "Tensor"), Global("torch.nn.parameter", "Parameter"))
    if new_type not in plain or not isinstance(args, tuple) or d.decode(state, depth) not in ({}, None):
        return NotImplemented
    return d.call(Reduce(func, args), depth)  # not decode(): a temporary must not enter the id memo


def _h_torch_size(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(0, 1))
    if args is None or (args and not isinstance(args[0], (tuple, list))):
        return NotImplemented
    return tuple(args[0]) if args else ()


def _h_torch_device(d: Decoder, node: Call, depth: int) -> Any:
    args = d.plain_args(node, depth, counts=(1, 2))
    if args is None or not isinstance(args[0], str):
        return NotImplemented
    return args[0] if len(args) == 1 or args[1] is None else f"{args[0]}:{args[1]}"


# ``module.name`` of a global -> the handler that decodes calls to it
HANDLERS: dict[str, DecodeHandler] = {
    "collections.OrderedDict": _h_ordered_dict,
    "numpy.dtype": _h_dtype,
    "dill._dill._create_array": _h_create_array,
    "tensorflow.python.framework.ops.convert_to_tensor": _h_convert_to_tensor,
    "_codecs.encode": _h_codecs_encode,
    "builtins.set": _h_set, "builtins.frozenset": _h_set,
    "builtins.bytearray": _h_bytes, "builtins.bytes": _h_bytes,
    "builtins.complex": _h_complex,
    "torch._utils._rebuild_tensor": _h_rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _h_rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _h_rebuild_tensor,
    "torch._utils._rebuild_parameter": _h_rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _h_rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _h_rebuild_from_type,
    "torch.Size": _h_torch_size,
    "torch.device": _h_torch_device,
    **{f"{mod}._reconstruct": _h_reconstruct for mod in NUMPY_CORE},
    **{f"{mod}.scalar": _h_scalar for mod in NUMPY_CORE},
    **{f"{mod}._frombuffer": _h_frombuffer for mod in NUMPY_NUMERIC},
    **{name: _h_path for name in PATH_CLASSES},
}
