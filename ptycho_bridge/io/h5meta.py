"""Pure-Python HDF5 *metadata* reader for the files libhdf5 writes with default settings.

Why: ``inspect`` of a TF-era archive needs only metadata of ``model.weights.h5`` (each dataset's path, shape and
dtype, a group's ``name`` attribute) and ``model.h5`` (one float attribute). Getting them through h5py costs
~80 ms of imports (h5py + numpy) plus a forked child, in a command whose budget is 100 ms. This reader answers from
the bytes with the standard library alone, in a few milliseconds.

It is deliberately small and strict: superblock v0/v1 (offsets and lengths of 8 bytes, no user block, no driver
block), version-1 object headers with continuation chunks, symbol-table groups (v1 B-tree ``TREE`` group nodes,
``SNOD`` symbol nodes, ``HEAP`` local heaps), contiguous or compact datasets of fixed-point or IEEE float type,
and attributes (:mod:`ptycho_bridge.io.h5meta_messages`). Anything else -- another version, a soft or external
link, new-style (link-message) groups, chunked, external or virtual storage, an unknown message, a revisited
address, names out of order, a count over its bound, truncation -- makes :func:`scan` return None, and the
caller uses the isolated h5py path, which reports the authoritative error. It never raises.

Bounds (docs/security.md §5): every read is checked against the superblock's end-of-file address (itself at most
the image length); every object header, chunk, B-tree node, symbol node and local heap is visited once; at most
:data:`MAX_OBJECTS` objects, :data:`MAX_DEPTH` nested groups and :data:`MAX_BTREE_LEVEL` B-tree levels; total work
(messages, B-tree entries, symbols, heap objects) at most one step per 8 bytes of image plus a constant. No
recursion: the group walk and the B-tree walk use explicit stacks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from ptycho_bridge.io.h5meta_messages import (
    MAX_NAME,
    UNDEF,
    UNSUPPORTED,
    Bad,
    ComplexType,
    Image,
    Numeric,
    attribute,
    dataspace,
    datatype,
    need,
)

__all__ = ["H5Metadata", "UNSUPPORTED", "scan"]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_OBJECTS = 16384  # groups + datasets (a Keras autoencoder file holds a few hundred)
MAX_DEPTH = 64  # nested groups
MAX_BTREE_LEVEL = 16
MAX_K = 1024  # B-tree / symbol-node K from the superblock (libhdf5's default: 16 and 4)
MAX_CHUNKS = 64  # object-header chunks (the first plus continuations) per object
ENTRY = 40  # symbol table entry: name offset, header address, cache type, reserved, 16-byte scratch pad

# message types of the subset; any other type is refused (link info, links, external files, attribute info ...)
NIL, DATASPACE, DATATYPE, FILL, LAYOUT, ATTRIBUTE, CONTINUATION, SYMBOL_TABLE, MTIME = (
    0x00, 0x01, 0x03, 0x05, 0x08, 0x0C, 0x10, 0x11, 0x12)
DATASET_MESSAGES = {DATASPACE, DATATYPE, FILL, LAYOUT}


@dataclass(frozen=True)
class H5Metadata:
    """What ``scan`` read. ``datasets``: ``{"/a/b": (shape, dtype)}`` in the order of
    :func:`ptycho_bridge.io.h5.walk_datasets`, dtype as ``str(h5py_dataset.dtype)``; ``attributes``: for ``"/"``
    and every object path, ``{name: value}`` (int, float, str, or :data:`UNSUPPORTED`); ``storage``: per dataset
    ``(start, nbytes)`` of its contiguous raw data in the image (checked to lie inside the file and to be exactly
    shape x itemsize), None for compact data or data never written -- libhdf5's ``get_offset`` answers alike."""

    datasets: dict[str, tuple[tuple[int, ...], str]]
    attributes: dict[str, dict[str, Any]]
    storage: dict[str, tuple[int, int] | None] = field(default_factory=dict)


def scan(image: bytes | memoryview, *, within: str | None = None) -> H5Metadata | None:
    """The metadata of an HDF5 image, or None if it is outside the subset this reader understands.

    ``image`` may be a memoryview of bytes (a member buffer read in place): only the metadata is looked at.
    ``within`` (a top-level group, ``"/params"``) walks that group alone: the root's other members are not
    parsed and not reported -- what a caller asking for one small dataset needs, in a fraction of the time."""
    if isinstance(image, memoryview):
        if not (image.c_contiguous and image.ndim == 1 and image.format in ("B", "b", "c")):
            return None
        image = image.cast("B")
    elif not isinstance(image, bytes):
        return None
    try:
        return _Scanner(image, within).run()
    except (Bad, struct.error, IndexError, ValueError, UnicodeDecodeError, OverflowError, KeyError):
        return None


class _Object:
    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}
        self.stab: tuple[int, int] | None = None  # (B-tree address, local heap address)
        self.shape: tuple[int, ...] | None = None
        self.dtype: Numeric | None = None
        self.layout: tuple[int, int, int] | None = None  # (class, address, size)
        self.kinds: list[int] = []


class _Scanner:
    def __init__(self, image: bytes | memoryview, within: str | None = None) -> None:
        self.img = Image(image, steps=len(image) // 8 + 4096)
        self.within = within
        self.seen: set[int] = set()  # every structure address visited (headers, chunks, nodes, heaps)

    def visit(self, addr: int) -> None:
        need(addr != UNDEF and addr not in self.seen)
        self.seen.add(addr)

    # -- superblock ----------------------------------------------------------------------------------
    def run(self) -> H5Metadata:
        img = self.img
        need(img.take(0, 8) == SIGNATURE)
        version = img.u8(8)
        need(version in (0, 1))
        # free-space, root-group and shared-header versions 0, reserved 0, 8-byte offsets and lengths
        need(img.take(9, 7) == bytes([0, 0, 0, 0, 8, 8, 0]))
        self.leaf_k, self.node_k = img.u16(16), img.u16(18)
        need(0 < self.leaf_k <= MAX_K and 0 < self.node_k <= MAX_K and img.u32(20) == 0)
        p = 24
        if version == 1:
            need(0 < img.u16(24) <= MAX_K and img.u16(26) == 0)
            p = 28
        base, free, eof, driver = (img.u64(p + 8 * i) for i in range(4))
        need(base == 0 and free == UNDEF and driver == UNDEF and p + 32 + ENTRY <= eof <= len(img.data))
        img.eoa = eof
        root_addr, root_cache = self.entry(p + 32)[1:]
        root = self.object(root_addr)
        need(root.stab is not None)
        self.check_cache(root, root_cache)
        return self.walk(root)

    def entry(self, off: int) -> tuple[int, int, tuple[int, int] | None]:
        """A symbol table entry: (name offset, object header address, cached (B-tree, heap) or None)."""
        img = self.img
        name_off, addr, cache = img.u64(off), img.u64(off + 8), img.u32(off + 16)
        need(cache in (0, 1))  # 2 is a soft link
        return name_off, addr, ((img.u64(off + 24), img.u64(off + 32)) if cache == 1 else None)

    @staticmethod
    def check_cache(obj: _Object, cache: tuple[int, int] | None) -> None:
        need(cache is None or cache == obj.stab)

    # -- the group walk: same order as io.h5.walk_datasets (a stack of groups, names in order) --------------
    def walk(self, root: _Object) -> H5Metadata:
        datasets: dict[str, tuple[tuple[int, ...], str]] = {}
        storage: dict[str, tuple[int, int] | None] = {}
        attributes: dict[str, dict[str, Any]] = {"/": root.attrs}
        stack: list[tuple[str, _Object, int]] = [("", root, 0)]
        objects = 1
        while stack:
            path, group, depth = stack.pop()
            assert group.stab is not None
            for name, addr, cache in self.links(*group.stab):
                if depth == 0 and self.within is not None and f"/{name}" != self.within:
                    continue  # outside the group asked for: not parsed, not reported
                objects += 1
                need(objects <= MAX_OBJECTS)
                child = self.object(addr)
                child_path = f"{path}/{name}"
                attributes[child_path] = child.attrs
                if child.stab is not None:
                    self.check_cache(child, cache)
                    need(depth + 1 <= MAX_DEPTH)
                    stack.append((child_path, child, depth + 1))
                else:
                    need(cache is None)
                    assert child.shape is not None and child.dtype is not None
                    datasets[child_path] = (child.shape, child.dtype.dtype)
                    assert child.layout is not None
                    cls, start, nbytes = child.layout
                    storage[child_path] = (start, nbytes) if cls == 1 and start != UNDEF else None
        return H5Metadata(datasets, attributes, storage)

    # -- symbol-table groups ---------------------------------------------------------------------------
    def links(self, btree: int, heap: int) -> list[tuple[str, int, tuple[int, int] | None]]:
        """A group's members in B-tree order, which must be strictly increasing names (libhdf5's lookup order)."""
        names = self.local_heap(heap)
        out: list[tuple[str, int, tuple[int, int] | None]] = []
        last: bytes | None = None
        # explicit stack of (node address, expected level or None for the root, lower key, upper key)
        stack: list[tuple[int, int | None, bytes | None, bytes | None]] = [(btree, None, None, None)]
        while stack:
            addr, level, low, high = stack.pop()
            if level is None or level >= 0:  # a TREE node
                self.visit(addr)
                img = self.img
                need(img.take(addr, 4) == b"TREE" and img.u8(addr + 4) == 0)
                node_level, used = img.u8(addr + 5), img.u16(addr + 6)
                need(node_level <= MAX_BTREE_LEVEL and (level is None or node_level == level))
                need(used <= 2 * self.node_k)
                img.check(addr, 24 + (4 * self.node_k + 1) * 8)  # libhdf5 reads the whole node
                img.step(used + 1)
                keys = [names(img.u64(addr + 24 + 16 * i)) for i in range(used + 1)]
                children = [img.u64(addr + 32 + 16 * i) for i in range(used)]
                for i in range(used):
                    need(keys[i] <= keys[i + 1])
                need(low is None or used == 0 or keys[0] >= low)
                need(high is None or used == 0 or keys[used] <= high)
                child_level = node_level - 1 if node_level > 0 else -1
                for i in reversed(range(used)):
                    stack.append((children[i], child_level, keys[i], keys[i + 1]))
            else:  # a symbol node: the link names, lower key < name <= upper key
                for name, obj, cache in self.symbol_node(addr, names):
                    need((last is None or name > last) and (low is None or name > low) and (high is None or name <= high))
                    last = name
                    need(b"/" not in name and name not in (b"", b"."))
                    out.append((name.decode("utf-8"), obj, cache))
        return out

    def symbol_node(self, addr: int, names: Any) -> list[tuple[bytes, int, tuple[int, int] | None]]:
        self.visit(addr)
        img = self.img
        need(img.take(addr, 4) == b"SNOD" and img.u8(addr + 4) == 1 and img.u8(addr + 5) == 0)
        count = img.u16(addr + 6)
        need(count <= 2 * self.leaf_k)
        img.check(addr, 8 + 2 * self.leaf_k * ENTRY)
        img.step(count)
        entries = []
        for i in range(count):
            name_off, obj, cache = self.entry(addr + 8 + ENTRY * i)
            entries.append((names(name_off), obj, cache))
        return entries

    def local_heap(self, addr: int) -> Any:
        """A ``HEAP`` (v0) checked as libhdf5 checks it; returns name lookup by offset."""
        self.visit(addr)
        img = self.img
        need(img.take(addr, 4) == b"HEAP" and img.take(addr + 4, 4) == b"\0\0\0\0")
        size, free, data = img.u64(addr + 8), img.u64(addr + 16), img.u64(addr + 24)
        img.check(data, size)
        seen: set[int] = set()
        while free != 1:  # H5HL_FREE_NULL
            img.step()
            need(free not in seen and free + 16 <= size)
            seen.add(free)
            nxt, fsize = img.u64(data + free), img.u64(data + free + 8)
            need(free + fsize <= size)
            free = nxt

        def name(off: int) -> bytes:
            need(off < size)
            text = img.take(data + off, min(size, off + MAX_NAME + 1) - off)
            end = text.find(b"\0")
            need(end >= 0)
            return text[:end]

        return name

    # -- object headers (version 1) -----------------------------------------------------------------------
    def object(self, addr: int) -> _Object:
        """Every message of one object header, checked; a group (symbol table) or a plain dataset."""
        self.visit(addr)
        img = self.img
        need(img.u8(addr) == 1 and img.u8(addr + 1) == 0)
        nmesgs, chunk0 = img.u16(addr + 2), img.u32(addr + 8)
        chunks = [(addr + 16, chunk0)]
        obj = _Object()
        count = 0
        while chunks:
            start, length = chunks.pop()
            img.check(start, length)
            p, end = start, start + length
            while p < end:
                img.step()
                count += 1
                need(count <= nmesgs and p + 8 <= end)
                kind, size, flags = img.u16(p), img.u16(p + 2), img.u8(p + 4)
                body, p = p + 8, p + 8 + size
                need(size % 8 == 0 and p <= end and flags & ~1 == 0 and img.take(body - 3, 3) == b"\0\0\0")
                if kind == CONTINUATION:
                    need(size >= 16)
                    caddr, clen = img.u64(body), img.u64(body + 8)
                    self.visit(caddr)
                    need(clen >= 8 and len(chunks) + 1 < MAX_CHUNKS)
                    chunks.append((caddr, clen))
                elif kind != NIL:
                    self.message(obj, kind, body, size)
        need(count == nmesgs)
        kinds = set(obj.kinds)
        need(len(kinds) == len(obj.kinds))  # no message type twice (attributes are not listed)
        if obj.stab is not None:
            need(not kinds & DATASET_MESSAGES)
        else:
            need({DATASPACE, DATATYPE, LAYOUT} <= kinds)
            self.check_layout(obj)
        return obj

    def message(self, obj: _Object, kind: int, body: int, size: int) -> None:
        img = self.img
        if kind == ATTRIBUTE:
            name, value = attribute(img, body, size)
            need(name not in obj.attrs)
            obj.attrs[name] = value
            return
        obj.kinds.append(kind)
        if kind == SYMBOL_TABLE:
            need(size >= 16)
            obj.stab = (img.u64(body), img.u64(body + 8))
        elif kind == DATASPACE:
            obj.shape = dataspace(img, body, size)
            need(obj.shape is not None)
        elif kind == DATATYPE:
            dt = datatype(img, body, size, base=True)
            need(isinstance(dt, (Numeric, ComplexType)))
            obj.dtype = dt  # type: ignore[assignment]
        elif kind == LAYOUT:
            need(img.u8(body) in (3, 4) and size >= 4)
            cls = img.u8(body + 1)
            if cls == 0:  # compact: size, raw data
                csize = img.u16(body + 2)
                need(4 + csize <= size)
                obj.layout = (0, body + 4, csize)
            elif cls == 1:  # contiguous: address, size
                need(size >= 18)
                obj.layout = (1, img.u64(body + 2), img.u64(body + 10))
            else:
                raise Bad("chunked or virtual layout")
        elif kind == FILL:
            self.check_fill(body, size)
        elif kind == MTIME:
            need(size >= 8 and img.take(body, 4) == b"\x01\0\0\0")
        else:
            raise Bad("message type")

    def check_fill(self, body: int, size: int) -> None:
        img = self.img
        version = img.u8(body)
        if version in (1, 2):
            alloc, write, defined = img.u8(body + 1), img.u8(body + 2), img.u8(body + 3)
            need(alloc in (1, 2, 3) and write in (0, 1, 2) and defined in (0, 1))
            if defined or version == 1:
                need(size >= 8 and 8 + img.u32(body + 4) <= size)
        elif version == 3:
            flags = img.u8(body + 1)
            need(flags & 0xC0 == 0 and flags & 3 in (1, 2, 3) and (flags >> 2) & 3 in (0, 1, 2))
            need(not (flags & 0x10 and flags & 0x20))
            if flags & 0x20:
                need(size >= 8 and 6 + img.u32(body + 2) <= size)
        else:
            raise Bad("fill value version")

    def check_layout(self, obj: _Object) -> None:
        """A compact or contiguous dataset whose storage is exactly shape x itemsize, inside the file."""
        assert obj.shape is not None and obj.dtype is not None and obj.layout is not None
        nbytes = obj.dtype.size
        for d in obj.shape:
            nbytes *= d
        cls, addr, size = obj.layout
        need(size == nbytes)
        if cls == 1 and addr != UNDEF:
            self.img.check(addr, size)
