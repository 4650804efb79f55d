"""Object-header message decoders for :mod:`ptycho_bridge.io.h5meta` (dataspace, datatype, attribute, global heap).

Why a separate module: :mod:`~ptycho_bridge.io.h5meta` walks the file's structure (superblock, object headers,
symbol-table groups); this one decodes the few message bodies that walk needs, for the subset libhdf5 writes with
default settings. Every decoder reads through :class:`Image`, which checks each offset against the file's
end-of-allocation address, and raises :class:`Bad` for anything outside that subset or inconsistent; the caller
turns :class:`Bad` into "not understood" (``scan`` returns None and the h5py path decides). Standard library only:
this runs where importing h5py and numpy (~80 ms) would cost more than the whole command may.
"""

from __future__ import annotations

import struct
from typing import Any

UNDEF = 0xFFFF_FFFF_FFFF_FFFF  # HDF5's "undefined address"
MAX_RANK = 8  # more dimensions than any model tensor has
MAX_NAME = 1024  # bytes of one link or attribute name


class Bad(Exception):
    """Outside the supported subset or inconsistent; never escapes :func:`ptycho_bridge.io.h5meta.scan`."""


class Unsupported:
    """An attribute whose value this reader does not decode (the caller falls back to h5py if it needs it)."""

    def __repr__(self) -> str:
        return "UNSUPPORTED"


UNSUPPORTED = Unsupported()


class Image:
    """The file's bytes, read only below ``eoa`` (the superblock's end-of-file address), with a step budget."""

    def __init__(self, data: bytes | memoryview, steps: int) -> None:
        self.data = data
        self.eoa = len(data)
        self.steps = steps
        self.gcols: dict[int, dict[int, tuple[int, int]]] = {}  # global heap collection -> {index: (start, size)}

    def step(self, n: int = 1) -> None:
        self.steps -= n
        if self.steps < 0:
            raise Bad("step budget")

    def check(self, off: int, n: int) -> int:
        if off < 0 or n < 0 or off + n > self.eoa:
            raise Bad("out of bounds")
        return off

    def u8(self, off: int) -> int:
        return self.data[self.check(off, 1)]

    def u16(self, off: int) -> int:
        return int.from_bytes(self.data[self.check(off, 2):off + 2], "little")

    def u32(self, off: int) -> int:
        return int.from_bytes(self.data[self.check(off, 4):off + 4], "little")

    def u64(self, off: int) -> int:
        return int.from_bytes(self.data[self.check(off, 8):off + 8], "little")

    def take(self, off: int, n: int) -> bytes:
        return bytes(self.data[self.check(off, n):off + n])  # bytes even when the image is a memoryview


def need(cond: bool) -> None:
    if not cond:
        raise Bad("inconsistent")


# -- dataspace (0x0001) ---------------------------------------------------------------------------------
def dataspace(img: Image, off: int, size: int) -> tuple[int, ...] | None:
    """The shape (``()`` for scalar), or None for a null dataspace."""
    version, rank, flags = img.u8(off), img.u8(off + 1), img.u8(off + 2)
    need(rank <= MAX_RANK and flags & ~1 == 0)  # bit 1 (permutation index) was never implemented
    if version == 1:
        need(img.u8(off + 3) == 0 and img.u32(off + 4) == 0)
        kind, p = (0 if rank == 0 else 1), off + 8
    elif version == 2:
        kind, p = img.u8(off + 3), off + 4
        need(kind in (0, 1, 2) and (kind == 1) == (rank > 0))
    else:
        raise Bad("dataspace version")
    end = p + 8 * rank * (2 if flags & 1 else 1)
    need(end - off <= size)
    img.check(off, end - off)
    dims = tuple(img.u64(p + 8 * i) for i in range(rank))
    if flags & 1:
        for i, d in enumerate(dims):
            m = img.u64(p + 8 * (rank + i))
            need(m == UNDEF or m >= d)
    return None if kind == 2 else dims


# -- datatype (0x0003) ----------------------------------------------------------------------------------
_INT_NAMES = {1: "8", 2: "16", 4: "32", 8: "64"}
# IEEE layouts as libhdf5 writes them: size -> (precision, exponent location, exponent size, mantissa size, bias)
_IEEE = {2: (16, 10, 5, 10, 15), 4: (32, 23, 8, 23, 127), 8: (64, 52, 11, 52, 1023)}
_STRUCT = {("i", 1): "b", ("u", 1): "B", ("i", 2): "h", ("u", 2): "H", ("i", 4): "i", ("u", 4): "I",
           ("i", 8): "q", ("u", 8): "Q", ("f", 2): "e", ("f", 4): "f", ("f", 8): "d"}


class Numeric:
    """A fixed-point or IEEE float type: ``dtype`` is what ``str(h5py_dataset.dtype)`` prints."""

    def __init__(self, kind: str, size: int, big: bool) -> None:
        self.kind, self.size, self.big = kind, size, big
        name = ("float" if kind == "f" else "int" if kind == "i" else "uint") + str(8 * size)
        self.dtype = f">{kind}{size}" if big and size > 1 else name
        self.fmt = (">" if big else "<") + _STRUCT[(kind, size)]


class ComplexType:
    """h5py's complex number: a compound of two IEEE floats named ``r`` and ``i`` at offsets 0 and size/2;
    ``dtype`` is what ``str(h5py_dataset.dtype)`` prints (``complex64``, ``>c8`` when big-endian)."""

    def __init__(self, part: Numeric) -> None:
        self.kind, self.size, self.big = "c", 2 * part.size, part.big
        self.dtype = f">c{self.size}" if part.big else f"complex{8 * self.size}"


FLOAT_MESSAGE = 20  # an IEEE float datatype message: 8-byte header + 12 bytes of properties


class VlenString:
    def __init__(self, cset: int) -> None:
        self.cset, self.size = cset, 16  # sequence length (4), collection address (8), object index (4)


def datatype(img: Image, off: int, size: int, *, base: bool = False) -> Numeric | ComplexType | VlenString:
    """A numeric type, h5py's complex compound, or (not as a base type) a variable-length string; anything
    else is :class:`Bad`."""
    need(size >= 8)
    head = img.u8(off)
    cls, version = head & 0x0F, head >> 4
    bits = img.u8(off + 1) | img.u8(off + 2) << 8 | img.u8(off + 3) << 16
    tsize = img.u32(off + 4)
    need(version in (1, 2, 3))
    if cls == 0:  # fixed point: byte order, padding 0, signed; offset 0, full precision
        need(size >= 12 and bits & ~0b1001 == 0 and tsize in _INT_NAMES)
        need(img.u16(off + 8) == 0 and img.u16(off + 10) == 8 * tsize)
        return Numeric("i" if bits & 8 else "u", tsize, bool(bits & 1))
    if cls == 1:  # IEEE float: no padding, implied msb normalisation, sign in the top bit
        need(size >= 20 and tsize in _IEEE and bits & 0xFF & ~1 == 0x20 and bits >> 8 == 8 * tsize - 1)
        prec, eloc, esize, msize, bias = _IEEE[tsize]
        need((img.u16(off + 8), img.u16(off + 10), img.u8(off + 12), img.u8(off + 13), img.u8(off + 14),
              img.u8(off + 15), img.u32(off + 16)) == (0, prec, eloc, esize, 0, msize, bias))
        return Numeric("f", tsize, bool(bits & 1))
    if cls == 6:  # compound: only h5py's complex numbers ({r, i} of one float type), versions 1 and 2
        return _complex(img, off, size, version, bits, tsize)
    if cls == 9 and not base:  # variable-length string of 1-byte characters (h5py's str)
        need(bits & 0xF == 1 and (bits >> 8) & 0xF in (0, 1) and bits >> 12 == 0 and tsize == 16)
        inner = datatype(img, off + 8, size - 8, base=True)
        need(isinstance(inner, Numeric) and inner.kind != "f" and inner.size == 1)
        return VlenString((bits >> 8) & 0xF)
    raise Bad("datatype class")


def _complex(img: Image, off: int, size: int, version: int, bits: int, tsize: int) -> ComplexType:
    """Members ``r`` at 0 and ``i`` at ``tsize / 2``, both the same IEEE float, nothing else (no padding, no
    array members); version 1 carries a dimensionality block per member that must be empty."""
    need(version in (1, 2) and bits == 2 and tsize in (8, 16))
    p, end, part = off + 8, off + size, None
    for name, offset in ((b"r\0", 0), (b"i\0", tsize // 2)):
        need(img.take(p, 8) == name + b"\0" * 6)  # the name, NUL-padded to 8 bytes
        need(img.u32(p + 8) == offset)
        p += 12
        if version == 1:  # dimensionality 0, reserved, permutation, reserved, four sizes: all zero
            need(img.take(p, 28) == b"\0" * 28)
            p += 28
        need(p + FLOAT_MESSAGE <= end)
        member = datatype(img, p, FLOAT_MESSAGE, base=True)
        need(isinstance(member, Numeric) and member.kind == "f" and 2 * member.size == tsize)
        need(part is None or (member.size, member.big) == (part.size, part.big))
        part = member
        p += FLOAT_MESSAGE
    assert part is not None
    return ComplexType(part)


# -- attribute (0x000C) ---------------------------------------------------------------------------------
def _pad8(n: int) -> int:
    return -(-n // 8) * 8


def attribute(img: Image, off: int, size: int) -> tuple[str, Any]:
    """``(name, value)``: a scalar number as int/float, a scalar string as str, anything else UNSUPPORTED."""
    end = off + size
    version = img.u8(off)
    name_size, dt_size, ds_size = img.u16(off + 2), img.u16(off + 4), img.u16(off + 6)
    if version == 1:
        need(img.u8(off + 1) == 0)
        p, pad = off + 8, _pad8
    elif version in (2, 3):
        need(img.u8(off + 1) == 0)  # no shared datatype or dataspace
        p, pad = off + 8, (lambda n: n)
        if version == 3:
            need(img.u8(p) in (0, 1))
            p += 1
    else:
        raise Bad("attribute version")
    need(2 <= name_size <= MAX_NAME and dt_size > 0 and ds_size > 0)
    raw = img.take(p, name_size)
    need(raw.find(b"\0") == name_size - 1)
    name = raw[:-1].decode("utf-8")
    p += pad(name_size)
    need(p + dt_size <= end)
    dt = datatype(img, p, dt_size)
    p += pad(dt_size)
    need(p + ds_size <= end)
    shape = dataspace(img, p, ds_size)
    p += pad(ds_size)
    count = 0 if shape is None else _product(shape)
    need(p + count * dt.size <= end)
    if shape != ():
        return name, UNSUPPORTED
    if isinstance(dt, Numeric):
        return name, struct.unpack(dt.fmt, img.take(p, dt.size))[0]
    if isinstance(dt, ComplexType):
        return name, UNSUPPORTED
    return name, _vlen_string(img, p, dt.cset)


def _product(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _vlen_string(img: Image, p: int, cset: int) -> Any:
    """A variable-length string's bytes from its global heap collection, as h5py returns it (else UNSUPPORTED)."""
    length, addr, index = img.u32(p), img.u64(p + 4), img.u32(p + 12)
    try:
        objects = _collection(img, addr)
    except Bad:
        return UNSUPPORTED
    if index == 0 or index not in objects or objects[index][1] != length:
        return UNSUPPORTED
    start, _ = objects[index]
    data = bytes(img.data[start:start + length])
    if b"\0" in data:  # h5py's C string would stop there
        return UNSUPPORTED
    try:
        return data.decode("ascii" if cset == 0 else "utf-8")
    except UnicodeDecodeError:
        return UNSUPPORTED


def _collection(img: Image, addr: int) -> dict[int, tuple[int, int]]:
    """A global heap collection (``GCOL`` v1) as {index: (data offset, size)}; its objects must tile it."""
    if addr in img.gcols:
        return img.gcols[addr]
    img.gcols[addr] = {}  # a failed parse stays empty
    need(img.take(addr, 4) == b"GCOL" and img.u8(addr + 4) == 1)
    csize = img.u64(addr + 8)
    img.check(addr, csize)
    objects: dict[int, tuple[int, int]] = {}
    p, end = addr + 16, addr + csize
    while p < end:
        img.step()
        if p + 16 > end:
            break  # trailing free space too small for an object header
        index, osize = img.u16(p), img.u64(p + 8)
        if index == 0:  # free space: the rest of the collection
            need(osize >= 16 and p + osize == end)
            break
        need(index not in objects and p + 16 + _pad8(osize) <= end)
        objects[index] = (p + 16, osize)
        p += 16 + _pad8(osize)
    img.gcols[addr] = objects
    return objects
