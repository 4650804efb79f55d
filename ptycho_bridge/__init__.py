"""ptycho-bridge: format-neutral, safe persistence and conversion of PtychoPINN model archives.

The public API fits on one screen (docs/api.md); everything else is an implementation module.
``open``/``read_archive`` read any archive era; ``load_model`` builds a ready-to-run network with
one engine; ``save_torch``/``save_keras`` write a trained network so upstream's loaders open it.
The last three are imported on first use, so ``import ptycho_bridge`` never imports a framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from ptycho_bridge.errors import (  # noqa: E402
    ArchiveError,
    ArchiveLimitError,
    BridgeError,
    ChecksumError,
    ConversionRefused,
    CorruptArchiveError,
    FormatError,
    OutputExistsError,
    PickleDecodeError,
    SchemaError,
    SpecError,
    UnsafeArchiveError,
    UnsupportedError,
)
from ptycho_bridge.formats.detect import read_archive  # noqa: E402
from ptycho_bridge.io.safezip import Limits, SafeZip  # noqa: E402
from ptycho_bridge.model import BridgeArchive, ModelEntry, TensorInfo  # noqa: E402
from ptycho_bridge.schema import load_schema, schema_errors, schema_names  # noqa: E402
from ptycho_bridge.spec.network import NetworkSpec, expected_tensors  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover - the lazy attributes below, for type checkers
    from ptycho_bridge.api.load import Runnable, load_model
    from ptycho_bridge.api.save import save_keras, save_torch

open = read_archive  # noqa: A001 - ``ptycho_bridge.open(path)``, like ``zipfile``/``h5py``'s entry points

# lazy attribute -> module that defines it (imported by __getattr__ on first access)
_LAZY = {"load_model": "ptycho_bridge.api.load", "Runnable": "ptycho_bridge.api.load",
         "save_torch": "ptycho_bridge.api.save", "save_keras": "ptycho_bridge.api.save"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ptycho_bridge' has no attribute {name!r}")


__all__ = [
    "__version__", "open", "read_archive", "load_model", "Runnable", "save_torch", "save_keras",
    "BridgeArchive", "ModelEntry", "TensorInfo", "NetworkSpec", "expected_tensors",
    "Limits", "SafeZip", "load_schema", "schema_errors", "schema_names",
    "BridgeError", "ArchiveError", "ArchiveLimitError", "ChecksumError", "ConversionRefused", "CorruptArchiveError",
    "FormatError", "OutputExistsError", "PickleDecodeError", "SchemaError", "SpecError", "UnsafeArchiveError",
    "UnsupportedError",
]
