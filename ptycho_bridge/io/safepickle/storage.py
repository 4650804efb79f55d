"""Torch tensor storages, as a ``persistent_load`` hands them to the interpreter.

Why: a torch checkpoint keeps tensor bytes outside the pickle (one zip member per storage) and the
pickle names them by persistent id; :mod:`converters.pytorch.torchzip` resolves those ids to a
:class:`TensorStorage`, and the decoder (:mod:`.handlers`) views it as numpy arrays. Keeping the
type here lets both sides share it without the pickle layer knowing about zip files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import PickleDecodeError
from ptycho_bridge.io.safepickle.layout import TORCH_DTYPES


@dataclass(eq=False)
class TensorStorage:
    """A flat torch storage handed out by a ``persistent_load`` (see :mod:`converters.pytorch.torchzip`).

    ``raw`` is the little-endian bytes of the storage; ``dtype`` a torch dtype name from
    :data:`TORCH_DTYPES` (``float32``, ``bfloat16`` …).
    """

    key: str
    raw: bytes
    dtype: str
    _views: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def numel(self, dtype: str, *, member: str) -> int:
        """How many ``dtype`` elements the storage holds; a dtype not in :data:`TORCH_DTYPES` or a byte
        count that is not a whole number of elements is refused. No numpy: a deferred decode checks
        tensors with this before (and without) building them."""
        if dtype not in TORCH_DTYPES:
            raise PickleDecodeError(f"unsupported torch dtype {dtype!r}", member=member)
        itemsize = TORCH_DTYPES[dtype][1]
        if len(self.raw) % itemsize:
            raise PickleDecodeError(
                f"storage {self.key} holds {len(self.raw)} bytes, not a multiple of {dtype} size {itemsize}",
                member=member,
            )
        return len(self.raw) // itemsize

    def as_array(self, dtype: str, *, member: str) -> np.ndarray:
        """The storage as a read-only 1-D array of ``dtype`` (bfloat16 widened exactly to float32)."""
        if dtype not in self._views:
            self.numel(dtype, member=member)
            if dtype == "bfloat16":
                bits = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(self.raw, dtype=np.dtype(TORCH_DTYPES[dtype][0]))
            self._views[dtype] = arr
        return self._views[dtype]
