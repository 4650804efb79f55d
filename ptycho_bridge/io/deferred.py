"""Arrays known by shape and dtype whose values are built on first use.

Why: ``inspect`` reports a probe's or a tensor's shape, dtype and byte count, never its values, and
building an ndarray means importing numpy (50-110 ms, more than the rest of the command; issue 16).
The safe pickle decoder (torch tensors, numpy arrays in ``params.dill``) and the bridge-2 params
reader hand out a :class:`DeferredArray` where asked to: every check on the bytes (sizes, geometry,
bounds) has run when it is made; only the copy into an ndarray waits for :meth:`DeferredArray.materialise`.
Readers turn them into ndarrays for every command but ``inspect`` (:func:`materialise_tree`,
:class:`~ptycho_bridge.model.LazyTensors`), so no other code ever sees one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Hashable

from ptycho_bridge.lazy import is_loaded
from ptycho_bridge.lazy import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

# bytes per element of every dtype a canonical tensor or probe may have, by numpy's dtype name: sizes
# known without importing numpy
ITEMSIZES: dict[str, int] = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2,
    "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
    "complex64": 8, "complex128": 16,
}


def itemsize(dtype: str) -> int:
    """Bytes per element of ``dtype`` (a numpy dtype name); numpy is asked only for a name not in
    :data:`ITEMSIZES`."""
    size = ITEMSIZES.get(dtype)
    return size if size is not None else int(np.dtype(dtype).itemsize)


class DeferredArray:
    """An array of ``shape`` and ``dtype`` (numpy's name for it, e.g. ``'complex64'``), built by
    ``build`` on the first :meth:`materialise` and kept.

    ``key``, when given, identifies the content exactly (e.g. the shape, dtype, order and raw bytes it
    is built from): two arrays with equal keys are equal without building either.
    """

    __slots__ = ("shape", "dtype", "key", "_build", "_value")

    def __init__(self, shape: tuple[int, ...], dtype: str, build: Callable[[], "npt.NDArray[Any]"], *,
                 key: Hashable | None = None) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.key = key
        self._build: Callable[[], npt.NDArray[Any]] | None = build
        self._value: npt.NDArray[Any] | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype)

    def materialise(self) -> "npt.NDArray[Any]":
        if self._value is None:
            assert self._build is not None
            self._value = self._build()
            self._build = None  # drop the closure (and the bytes it holds)
        return self._value

    def __repr__(self) -> str:
        return f"DeferredArray(shape={self.shape}, dtype={self.dtype!r})"


def is_array(value: Any) -> bool:
    """Whether ``value`` is an ndarray or a :class:`DeferredArray`, without importing numpy to ask."""
    return isinstance(value, DeferredArray) or (is_loaded("numpy") and isinstance(value, np.ndarray))


def materialise_tree(value: Any) -> Any:
    """``value`` with every :class:`DeferredArray` inside dicts, lists and tuples built; containers
    without one are returned as they are (same objects), so a tree with no arrays costs one walk."""
    if isinstance(value, DeferredArray):
        return value.materialise()
    if isinstance(value, dict):
        built = {k: materialise_tree(v) for k, v in value.items()}
        return value if all(built[k] is value[k] for k in value) else built
    if type(value) in (list, tuple):
        seq = [materialise_tree(v) for v in value]
        return value if all(a is b for a, b in zip(seq, value)) else type(value)(seq)
    return value
