"""The era registry: every archive format the readers know, in detection order.

Why strings: core (``ptycho_bridge``) never imports ``converters`` at module level — the backends
depend on the core, not the reverse. This table is the one place core names the backends' readers
(like the engine registry names engines); :func:`reader_classes` imports them on first use.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from ptycho_bridge.formats.base import EraReader

# detection order: the self-describing formats first, then the pickled eras
READERS: tuple[str, ...] = (
    "ptycho_bridge.formats.bridge2.read:BridgeReader",
    "converters.pytorch.read:TorchJsonReader",
    # before tf-modelmanager-1: both eras write manifest.dill '1.0'; this one claims only archives whose
    # every model is a SavedModel directory (saved_model.pb + keras_metadata.pb, no model.keras)
    "converters.tensorflow.savedmodel.read:SavedModelReader",
    "converters.tensorflow.read:TfModelManagerReader",
    "converters.pytorch.read:TorchBundleReader",
    "converters.pytorch.read:LightningCheckpointReader",
)


@lru_cache(maxsize=None)
def reader_classes() -> tuple[type[EraReader], ...]:
    """The reader classes of :data:`READERS`, imported once."""
    out = []
    for ref in READERS:
        module, name = ref.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return tuple(out)

