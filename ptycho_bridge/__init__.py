"""ptycho-bridge: format-neutral, safe persistence and conversion of PtychoPINN model archives.

The public API fits on one screen (docs/api.md); everything else is an implementation module.
``open``/``read_archive`` read any archive era; ``load_model`` builds a ready-to-run network with
one engine; ``save_torch``/``save_keras`` write a trained network so upstream's loaders open it.
The last three are imported on first use, so ``import ptycho_bridge`` never imports a framework.
"""

from __future__ import annotations

import importlib
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
if TYPE_CHECKING:  # pragma: no cover - the lazy attributes below, for type checkers
    from ptycho_bridge.api.load import Runnable, load_model
    from ptycho_bridge.api.save import save_keras, save_torch
    from ptycho_bridge.formats.detect import read_archive
    from ptycho_bridge.formats.detect import read_archive as open  # noqa: A004
    from ptycho_bridge.io.safezip import Limits, SafeZip
    from ptycho_bridge.model import BridgeArchive, ModelEntry, TensorInfo
    from ptycho_bridge.schema import load_schema, schema_errors, schema_names
    from ptycho_bridge.spec.network import NetworkSpec, expected_tensors

# Every public name but the errors is imported on first access (PEP 562), so ``import ptycho_bridge``
# (and ``ptycho-bridge --help``) costs the errors module only, never numpy, h5py or a framework.
# lazy attribute -> (module that defines it, its name there)
_LAZY = {
    "open": ("ptycho_bridge.formats.detect", "read_archive"),  # ``ptycho_bridge.open(path)``, like zipfile/h5py
    "read_archive": ("ptycho_bridge.formats.detect", "read_archive"),
    "load_model": ("ptycho_bridge.api.load", "load_model"),
    "Runnable": ("ptycho_bridge.api.load", "Runnable"),
    "save_torch": ("ptycho_bridge.api.save", "save_torch"),
    "save_keras": ("ptycho_bridge.api.save", "save_keras"),
    "BridgeArchive": ("ptycho_bridge.model", "BridgeArchive"),
    "ModelEntry": ("ptycho_bridge.model", "ModelEntry"),
    "TensorInfo": ("ptycho_bridge.model", "TensorInfo"),
    "NetworkSpec": ("ptycho_bridge.spec.network", "NetworkSpec"),
    "expected_tensors": ("ptycho_bridge.spec.network", "expected_tensors"),
    "Limits": ("ptycho_bridge.io.safezip", "Limits"),
    "SafeZip": ("ptycho_bridge.io.safezip", "SafeZip"),
    "load_schema": ("ptycho_bridge.schema", "load_schema"),
    "schema_errors": ("ptycho_bridge.schema", "schema_errors"),
    "schema_names": ("ptycho_bridge.schema", "schema_names"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ptycho_bridge' has no attribute {name!r}")


__all__ = [
    "__version__", "open", "read_archive", "load_model", "Runnable", "save_torch", "save_keras",
    "BridgeArchive", "ModelEntry", "TensorInfo", "NetworkSpec", "expected_tensors",
    "Limits", "SafeZip", "load_schema", "schema_errors", "schema_names",
    "BridgeError", "ArchiveError", "ArchiveLimitError", "ChecksumError", "ConversionRefused", "CorruptArchiveError",
    "FormatError", "OutputExistsError", "PickleDecodeError", "SchemaError", "SpecError", "UnsafeArchiveError",
    "UnsupportedError",
]
