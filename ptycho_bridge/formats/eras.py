"""The era registry: every archive format the readers know, in detection order.

Why strings: core (``ptycho_bridge``) never imports ``converters`` at module level — the backends
depend on the core, not the reverse. This table is the one place core names the backends' readers
(like the engine registry names engines); :func:`reader_classes` imports them on first use.

Why member signatures: importing a reader costs its whole module tree (the SavedModel reader's
protobuf and CRC tables, the Keras graph analysis), and ``inspect`` must not pay for eras an archive
cannot be (issue 16). Each entry names a member its era always has; :func:`candidate_readers`
imports a reader only when the container has it. A signature is a necessary condition only: the
reader's own ``detect`` still decides.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from ptycho_bridge.formats.base import EraReader
from ptycho_bridge.io.safezip import SafeZip



@dataclass(frozen=True)
class Era:
    """One registry row: the reader (``"module:Class"``) and the member signature that must be present
    before it is imported: ``member`` exactly, or some member whose name ends with ``suffix``."""

    reader: str
    member: str | None = None
    suffix: str | None = None

    def may_claim(self, names: frozenset[str]) -> bool:
        if self.member is not None and self.member not in names:
            return False
        return self.suffix is None or any(n.endswith(self.suffix) for n in names)


# detection order: the self-describing formats first, then the pickled eras
ERAS: tuple[Era, ...] = (
    Era("ptycho_bridge.formats.bridge2.read:BridgeReader", member="manifest.json"),
    Era("converters.pytorch.read:TorchJsonReader", member="manifest.json"),
    # before tf-modelmanager-1: both eras write manifest.dill '1.0'; this one claims only archives whose
    # every model is a SavedModel directory (saved_model.pb + keras_metadata.pb, no model.keras)
    Era("converters.tensorflow.savedmodel.read:SavedModelReader", member="manifest.dill", suffix="/saved_model.pb"),
    Era("converters.tensorflow.read:TfModelManagerReader", member="manifest.dill"),
    Era("converters.pytorch.read:TorchBundleReader", member="manifest.dill"),
    Era("converters.pytorch.read:LightningCheckpointReader", suffix="data.pkl"),
)
READERS: tuple[str, ...] = tuple(era.reader for era in ERAS)


@lru_cache(maxsize=None)
def reader_classes() -> tuple[type[EraReader], ...]:
    """The reader classes of :data:`READERS`, imported once."""
    return tuple(_import(ref) for ref in READERS)


def candidate_readers(zf: SafeZip) -> Iterator[type[EraReader]]:
    """The readers that may claim ``zf``, in detection order, each imported only when reached."""
    names = frozenset(zf.names())
    for era in ERAS:
        if era.may_claim(names):
            yield _import(era.reader)


@lru_cache(maxsize=None)
def _import(ref: str) -> type[EraReader]:
    module, name = ref.split(":")
    reader: type[EraReader] = getattr(importlib.import_module(module), name)
    return reader

