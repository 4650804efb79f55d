"""Drop the training state (optimizer variables) from a ``model.keras`` that inference never needs.

Why: upstream's autoencoder ``model.keras`` carries its Adam state (90 tensors, about half of the 7 MB
member); ``migrate --drop-optimizer`` leaves it out. Only the ``optimizer`` group of
``model.weights.h5`` is removed — every layer group, ``config.json`` and ``metadata.json`` stay byte-for-byte
— so the network loads exactly as before: Keras 3's loader skips optimizer variables it does not find
(it warns and keeps a fresh optimizer), which only matters for resuming training.

libhdf5 rewrites the file, and the bytes are untrusted, so the copy runs in the isolated child
(:mod:`ptycho_bridge.io.h5_isolated`) like every other libhdf5 read.
"""

from __future__ import annotations

import io
import zipfile

from ptycho_bridge.lazy import numpy as np

from converters.tensorflow.layout import KERAS_WEIGHTS, OPTIMIZER_GROUP
from ptycho_bridge.errors import FormatError
from ptycho_bridge.io.h5 import open_h5
from ptycho_bridge.io.h5_isolated import run_isolated
from ptycho_bridge.io.safezip import SafeZip


def _copy_without_optimizer(weights: bytes, label: str) -> np.ndarray:
    """The HDF5 image with every top-level object but ``optimizer`` (run in the isolated child)."""
    import h5py

    src = open_h5(weights, member=label)
    out = io.BytesIO()
    try:
        with h5py.File(out, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for key in src.keys():
                if key != OPTIMIZER_GROUP:
                    src.copy(src[key], dst, name=key)
    finally:
        src.close()
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def keras_without_optimizer(data: bytes, *, member: str) -> bytes:
    """``model.keras`` bytes whose ``model.weights.h5`` has no ``optimizer`` group; other members unchanged.

    Members keep their order, names, dates and compression. Raises :class:`FormatError` naming ``member``
    when the payload has no weights file.
    """
    nested = SafeZip(data, label=member)
    try:
        names = nested.names()
        if KERAS_WEIGHTS not in names:
            raise FormatError(f"no {KERAS_WEIGHTS} to strip", member=member)
        label = nested.member_label(KERAS_WEIGHTS)
        stripped = run_isolated(_copy_without_optimizer, nested.read(KERAS_WEIGHTS), label, member=label)
        contents = {name: nested.read(name) for name in names}
    finally:
        nested.close()
    contents[KERAS_WEIGHTS] = np.asarray(stripped, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as original, zipfile.ZipFile(buf, "w") as out:
        for info in original.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type = info.compress_type
            copy.external_attr = info.external_attr
            out.writestr(copy, contents[info.filename])
    return buf.getvalue()
