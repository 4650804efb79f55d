"""CRC-32C (Castagnoli) and LevelDB/TensorFlow's checksum masking, numpy-only by default.

Why: every TensorBundle tensor and every SSTable block carries a *masked* crc32c. zlib only has
CRC-32 (a different polynomial), so either a compiled package (``crc32c``, ``google-crc32c``) or a
pure implementation is needed. A byte-at-a-time Python loop is ~1 s/MB; instead the data is split
into equal lanes whose raw CRCs are computed side by side with numpy table lookups, then merged
with the GF(2) "append n zero bytes" operator (CRC linearity, as zlib's ``crc32_combine``). The
compiled package is used when importable (same results; the tests check both agree);
``PTYCHO_BRIDGE_CRC32C=numpy`` forces the numpy path.
"""

from __future__ import annotations

import os
from functools import lru_cache

from ptycho_bridge.lazy import numpy as np

POLY = 0x82F63B78  # reflected Castagnoli polynomial
MASK_DELTA = 0xA282EAD8
MIN_LANES, MAX_LANES = 16, 4096  # lanes ~ sqrt(n/2): balances the numpy column loop and the lane merge
SMALL = 4096  # below this many bytes the plain table loop is faster than the lane machinery


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ POLY if c & 1 else c >> 1
        table[i] = c
    return table


TABLE = _make_table()
_TABLE_LIST = [int(v) for v in TABLE]


def _raw_scalar(data: bytes | memoryview, reg: int) -> int:
    """Register update (no pre/post inversion) one byte at a time."""
    t = _TABLE_LIST
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _mat_apply(mat: tuple[int, ...], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _mat_mul(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_mat_apply(a, col) for col in b)


@lru_cache(maxsize=64)
def _zeros_operator(nbytes: int) -> tuple[int, ...]:
    """32×32 GF(2) matrix (as 32 column ints) of feeding ``nbytes`` zero bytes to the register."""
    one = tuple(_raw_scalar(b"\0", 1 << i) for i in range(32))
    result = tuple(1 << i for i in range(32))
    power = one
    n = nbytes
    while n:
        if n & 1:
            result = _mat_mul(power, result)
        power = _mat_mul(power, power)
        n >>= 1
    return result


def crc32c_numpy(data: bytes | bytearray | memoryview) -> int:
    """Standard CRC-32C of ``data`` (init and final XOR ``0xFFFFFFFF``) with numpy only."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    if n < SMALL:
        return _raw_scalar(buf.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    lanes = max(MIN_LANES, min(MAX_LANES, int((n / 2) ** 0.5)))
    m = n // lanes
    body = buf[: m * lanes].reshape(lanes, m)
    reg = np.zeros(lanes, dtype=np.uint32)
    reg[0] = 0xFFFFFFFF  # the initial value enters lane 0 only (linearity)
    for i in range(m):
        reg = TABLE[(reg ^ body[:, i]) & 0xFF] ^ (reg >> np.uint32(8))
    shift = _zeros_operator(m)
    total = 0
    for lane in reg.tolist():
        total = _mat_apply(shift, total) ^ lane
    total = _raw_scalar(buf[m * lanes :].tobytes(), total)
    return total ^ 0xFFFFFFFF


try:  # optional compiled implementation (ICRAR ``crc32c``); same function. PTYCHO_BRIDGE_CRC32C=numpy forces numpy.
    if os.environ.get("PTYCHO_BRIDGE_CRC32C") == "numpy":
        raise ImportError("numpy implementation requested")
    import crc32c as _crc32c_pkg

    def crc32c(data: bytes | bytearray | memoryview) -> int:
        """Standard CRC-32C (compiled ``crc32c`` package)."""
        return int(_crc32c_pkg.crc32c(bytes(data) if isinstance(data, memoryview) else data))

    BACKEND = "crc32c package " + getattr(_crc32c_pkg, "__version__", "?")
except ImportError:  # pragma: no cover - exercised when the package is absent
    crc32c = crc32c_numpy
    BACKEND = "numpy lanes"


def mask(crc: int) -> int:
    """LevelDB/TF ``crc32c::Mask``: rotate right by 15 bits, add a constant (mod 2**32)."""
    crc &= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    return mask(crc32c(data))
