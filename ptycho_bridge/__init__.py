"""ptycho-bridge: format-neutral, safe persistence and conversion of PtychoPINN model archives.

The public API fits on one screen; everything else is an implementation module.
"""

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

__all__ = [
    "__version__", "read_archive", "BridgeArchive", "ModelEntry", "TensorInfo", "NetworkSpec", "expected_tensors",
    "Limits", "SafeZip", "load_schema", "schema_errors", "schema_names",
    "BridgeError", "ArchiveError", "ArchiveLimitError", "ChecksumError", "ConversionRefused", "CorruptArchiveError",
    "FormatError", "OutputExistsError", "PickleDecodeError", "SchemaError", "SpecError", "UnsafeArchiveError",
    "UnsupportedError",
]
