"""Every fact of the bridge-2 layout in one place, imported by its reader, writer and verifier.

Why: the writer used to import its constants from the reader; now both (and the verifier) import
them from here, so changing the format means changing one file (plus ``docs/archive-format.md``
and ``schemas/manifest.schema.json``, which a test keeps in step).
"""

from __future__ import annotations

import hashlib

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import UnsupportedError

FORMAT = "ptycho-bridge"
FORMAT_VERSION = "2.2.0"  # 2.1: optional network.outer_mask / amp_channels, more source_era values; 2.2: model reassembly_centring
TENSOR_GROUP = "tensors"
PARAMS_GROUP = "params"
# the manifest schema's tensor dtypes ($defs/tensor); the offset fast path reads only these
TENSOR_DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
                           "complex64", "complex128"})


def tensor_sha256(array: np.ndarray) -> str:
    """sha256 of a tensor's C-order little-endian bytes (the manifest's tensor checksum)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def check_format_version(version: str, *, member: str) -> None:
    major = int(version.split(".")[0])
    supported = int(FORMAT_VERSION.split(".")[0])
    if major > supported:
        raise UnsupportedError(
            f"format_version {version} is newer than this reader supports ({FORMAT_VERSION}); upgrade ptycho-bridge",
            member=member,
            field="format_version",
        )
    if major < supported:
        raise UnsupportedError(f"format_version {version} predates bridge-2", member=member, field="format_version")
