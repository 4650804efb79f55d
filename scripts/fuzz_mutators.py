"""Structure-aware mutators for scripts/fuzz.py: pickle *cost* gadgets and HDF5 *metadata* edits.

Why: byte flips rarely produce the inputs that are expensive rather than malformed (issue 12): a
memoised big key re-hashed 270k times, keys that all hash alike, a stride-0 tensor, GCOL collections
nested in each other, a dataset whose declared shape no stored byte backs. These mutators build such
inputs on purpose, on top of the real fixture members, so the fuzzer measures the readers' *bounds*
(time, memory) and not only their error handling.

* :func:`pickle_cost` inserts one gadget just before a pickle's final ``STOP`` (the gadget pushes,
  works, and pops, so the seed's value stays intact and the reader gets past the gadget into the
  rest of the archive);
* :func:`hdf5_metadata` overwrites integers right after HDF5 signatures (superblock, ``OHDR``,
  ``GCOL``, ``TREE``, ``HEAP``, ``SNOD``, ``BTHD``, ``FRHP``) or plants nested ``GCOL`` collections.
"""

from __future__ import annotations

import random
import struct

BOUNDARY = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]
H5_SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"OHDR", b"OCHK", b"GCOL", b"TREE", b"HEAP", b"SNOD", b"BTHD", b"BTIN",
                 b"BTLF", b"FRHP", b"FHDB", b"FHIB", b"FSHD", b"FSSE")


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if n > 0xFFFF else b"M" + struct.pack("<H", n)


def _gadget(rng: random.Random) -> bytes:
    """A self-contained pickle fragment with a net stack effect of zero (everything it pushes it pops)."""
    kind = rng.choice(("rehash", "collide", "nest", "bigset", "marks", "memo", "bigint_key", "frozen_dag", "stride0"))
    n = rng.choice((10, 1_000, 10_000, 100_000, 300_000))
    if kind == "rehash":  # a memoised tuple key, hashed again at every SETITEM
        key = b"(" + b"K\x01" * min(n, 9_999) + b"tr\xff\xff\x00\x000"  # LONG_BINPUT 65535, POP
        return key + b"}" + b"j\xff\xff\x00\x00Ns" * rng.choice((10, 1_000, 100_000)) + b"0"
    if kind == "collide":  # complex(-1000003*i, i) all hash to 0
        items = b"".join(b"h\xfeG" + struct.pack(">d", -1000003.0 * i) + b"G" + struct.pack(">d", float(i))
                         + b"\x86RK\x00" for i in range(1, min(n, 50_000)))
        return b"cbuiltins\ncomplex\nq\xfe0}(" + items + b"u0"
    if kind == "nest":
        depth = min(n, 100_000)
        return b"]" * depth + b"a" * (depth - 1) + b"0"
    if kind == "bigset":
        return b"\x8f(" + b"".join(_int(i) for i in range(min(n, 200_000))) + b"\x900"
    if kind == "marks":
        return b"(" * min(n, 1_100_000) + b"1" * min(n, 1_100_000)
    if kind == "memo":
        return b"N" + b"".join(b"r" + struct.pack("<I", i) for i in range(min(n, 100_000))) + b"0"
    if kind == "bigint_key":
        big = (2**64 + 1).to_bytes(9, "little")
        return b"}" + b"".join(b"\x8a\x09" + big + b"K\x00s" for _ in range(3)) + b"0"
    if kind == "frozen_dag":  # 60 levels of (x, x): exponential if hashed naively
        body = b"K\x00"
        for _ in range(60):
            body = body + b"r\xfd\xff\x00\x00" + b"j\xfd\xff\x00\x00\x86"
        return b"}" + body + b"Ns0"
    # stride0: a numpy array view trick has no stride; the torch one needs a storage: a bogus persistent id
    size = rng.choice((25_000, 2**20))
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuK\x01tQK\x00" + b"(" + _int(size) + _int(size) + b"t(K\x00K\x00t\x89"
            + b"ccollections\nOrderedDict\n)RtR0")


def pickle_cost(rng: random.Random, seed: bytes) -> tuple[bytes, str]:
    """The seed pickle with a cost gadget just before its final STOP (or the gadget alone, as a stream)."""
    stop = seed.rfind(b".")
    gadget = _gadget(rng)
    if stop <= 0 or rng.random() < 0.2:
        return b"\x80\x04" + gadget + b"N.", "pickle-gadget-alone"
    return seed[:stop] + gadget + seed[stop:], "pickle-gadget"


def nested_gcol(size: int) -> bytes:
    """GCOL collections nested in each other's objects, each tiling to the end of the image (the input that
    made the old global-heap scan quadratic; also a named regression test in tests/test_hostile.py)."""
    k = max(1, size // 32)
    total = 16 + 32 * k
    out = bytearray(b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", total))
    for j in range(k):
        p = 16 + 32 * j
        out += struct.pack("<HHIQ", 1, 0, 0, 16) + b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", total - (p + 16))
    return bytes(out)


def hdf5_metadata(rng: random.Random, seed: bytes) -> tuple[bytes, str]:
    """Overwrite an integer in the metadata right after an HDF5 signature, or plant nested GCOLs."""
    data = bytearray(seed)
    if rng.random() < 0.1:
        pos = rng.randint(0, len(data))
        data[pos:pos] = nested_gcol(rng.choice((4_096, 65_536, 1 << 20)))
        return bytes(data), f"h5-nested-gcol@{pos}"
    hits: list[int] = []
    for sig in H5_SIGNATURES:
        start = data.find(sig)
        while start != -1 and len(hits) < 4_096:
            hits.append(start)
            start = data.find(sig, start + 1)
    if not hits:
        return bytes(data), "h5-none"
    at = rng.choice(hits) + rng.randint(4, 96)
    width = rng.choice((1, 2, 4, 8))
    value = rng.choice(BOUNDARY) & ((1 << (8 * width)) - 1)
    if rng.random() < 0.3:  # a nearby plausible value: sizes off by a little, addresses shifted
        old = int.from_bytes(data[at:at + width].ljust(width, b"\0"), "little")
        value = (old + rng.choice((-16, -8, -1, 1, 8, 16, 4096))) & ((1 << (8 * width)) - 1)
    data[at:at + width] = value.to_bytes(width, "little")
    return bytes(data), f"h5-meta@{at}:{width}"
