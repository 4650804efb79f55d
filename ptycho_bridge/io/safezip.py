"""Bounded, read-only access to zip containers (the archive and the zips nested inside it).

Why: every legacy member is untrusted. We check the central directory *before* reading a byte of
payload (member count, declared sizes, compression ratio, names, symlinks, encryption, duplicates),
then read members into memory with a hard cap that holds even when the declared sizes lie. Nothing
is ever extracted to disk. Nested zips (``model.keras``, ``model.pth``, ``*.pt``) are opened through
:meth:`SafeZip.open_nested` and obey the same rules plus a nesting-depth bound.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Iterator

from ptycho_bridge.errors import (
    ArchiveLimitError,
    CorruptArchiveError,
    UnsafeArchiveError,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every container; documented in ``docs/security.md``.

    ``max_ratio`` is only enforced on members whose uncompressed size exceeds ``ratio_floor`` so that
    tiny, highly compressible JSON members stay legal.
    """

    max_members: int = 4096
    max_member_size: int = 2 * GiB
    max_total_size: int = 8 * GiB
    max_ratio: float = 200.0
    ratio_floor: int = 1 * MiB
    max_nesting: int = 2
    max_name_length: int = 512

    def scaled(self, **changes: int | float) -> "Limits":
        """A copy with some bounds changed (the CLI's ``--max-*`` options use this)."""
        return replace(self, **changes)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class MemberInfo:
    """What the central directory says about one member (never trusted beyond the bounds)."""

    name: str
    size: int
    compressed_size: int
    crc: int
    method: int
    header_offset: int

    @property
    def stored(self) -> bool:
        return self.method == zipfile.ZIP_STORED


def _check_name(name: str, where: str, limits: Limits) -> None:
    """Reject names that could escape a directory if someone ever did extract the archive."""
    member = f"{where}:{name}" if where else name
    if not name:
        raise UnsafeArchiveError("empty member name", member=member)
    if len(name) > limits.max_name_length:
        raise UnsafeArchiveError(f"member name longer than {limits.max_name_length} characters", member=member)
    if "\\" in name:
        raise UnsafeArchiveError("backslash in member name (Windows path separator)", member=member)
    if "\x00" in name:
        raise UnsafeArchiveError("NUL byte in member name", member=member)
    if name.startswith("/"):
        raise UnsafeArchiveError("absolute member path", member=member)
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise UnsafeArchiveError("drive letter in member path", member=member)
    parts = name.split("/")
    if any(part == ".." for part in parts):
        raise UnsafeArchiveError("'..' in member path (zip slip)", member=member)


class SafeZip:
    """A zip opened for bounded in-memory reads.

    ``label`` is the human name used in every error message (``wts.h5.zip`` or
    ``wts.h5.zip:diffraction_to_obj/model.keras``).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes | IO[bytes],
        *,
        label: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        depth: int = 0,
    ) -> None:
        self.limits = limits
        self.depth = depth
        if depth > limits.max_nesting:
            raise ArchiveLimitError(f"zip nested deeper than {limits.max_nesting} levels", member=label)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.label = label or path.name
            try:
                fh: IO[bytes] = open(path, "rb")
            except FileNotFoundError:
                raise CorruptArchiveError("file not found", member=str(path)) from None
            except IsADirectoryError:
                raise CorruptArchiveError("is a directory, expected a zip file", member=str(path)) from None
            self.path: Path | None = path
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self.label = label or "<bytes>"
            fh = io.BytesIO(bytes(source))
            self.path = None
        else:
            self.label = label or getattr(source, "name", "<stream>")
            fh = source
            self.path = None
        self._fh = fh
        try:
            self._zip = zipfile.ZipFile(fh)
        except zipfile.BadZipFile as exc:
            fh.close()
            raise CorruptArchiveError(f"not a readable zip file ({exc})", member=self.label) from None
        except (OSError, ValueError, EOFError, NotImplementedError, RuntimeError, KeyError, IndexError,
                OverflowError, struct.error) as exc:  # e.g. NotImplementedError "zip file version 16.4" (fuzz)
            fh.close()
            raise CorruptArchiveError(f"unreadable zip file ({exc.__class__.__name__}: {exc})", member=self.label) from None
        try:
            self._members = self._scan()
        except Exception:
            self.close()
            raise

    # -- central directory checks -------------------------------------------------------------
    def _scan(self) -> dict[str, MemberInfo]:
        limits = self.limits
        infos = self._zip.infolist()
        if len(infos) > limits.max_members:
            raise ArchiveLimitError(f"{len(infos)} members, limit is {limits.max_members}", member=self.label)
        members: dict[str, MemberInfo] = {}
        total = 0
        for info in infos:
            name = info.filename
            _check_name(name, self.label, limits)
            where = self.member_label(name)
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_ISLNK(mode):
                raise UnsafeArchiveError("symbolic link entry", member=where)
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError("encrypted member", member=where)
            if name in members or name.rstrip("/") in members:
                raise UnsafeArchiveError("duplicate member name", member=where)
            if info.is_dir():
                continue
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise UnsafeArchiveError(
                    f"compression method {info.compress_type} not allowed (expected stored or deflated)",
                    member=where,
                )
            if info.file_size > limits.max_member_size:
                raise ArchiveLimitError(
                    f"declared size {info.file_size} bytes exceeds the per-member limit {limits.max_member_size}",
                    member=where,
                )
            if info.file_size > limits.ratio_floor:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > limits.max_ratio:
                    raise ArchiveLimitError(
                        f"compression ratio {ratio:.0f}:1 exceeds the limit {limits.max_ratio:.0f}:1 (zip bomb?)",
                        member=where,
                    )
            total += info.file_size
            if total > limits.max_total_size:
                raise ArchiveLimitError(
                    f"total uncompressed size exceeds the limit {limits.max_total_size} bytes", member=self.label
                )
            members[name] = MemberInfo(
                name, info.file_size, info.compress_size, info.CRC, info.compress_type, info.header_offset
            )
        # Members may not share bytes: overlapping entries let one small deflate kernel be inflated
        # once per member (the "overlapping files" zip bomb). Lower bound of each entry's extent:
        # 30-byte local header + compressed data.
        spans = sorted((m.header_offset, m.header_offset + 30 + m.compressed_size, m.name) for m in members.values())
        for (_, end, name), (start, _, _) in zip(spans, spans[1:]):
            if start < end:
                raise UnsafeArchiveError("member data overlaps the next member (overlapping-entries zip bomb)",
                                         member=self.member_label(name))
        return members

    # -- queries ------------------------------------------------------------------------------
    def member_label(self, name: str) -> str:
        return f"{self.label}:{name}"

    def names(self) -> list[str]:
        """File members in central-directory order (directories are skipped)."""
        return list(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def info(self, name: str) -> MemberInfo:
        try:
            return self._members[name]
        except KeyError:
            raise CorruptArchiveError("member not found", member=self.member_label(name)) from None

    @property
    def total_size(self) -> int:
        return sum(m.size for m in self._members.values())

    # -- reads --------------------------------------------------------------------------------
    def check_size(self, name: str, size: int, max_size: int | None = None) -> None:
        """Refuse ``size`` bytes of member ``name`` over ``max_size`` or the per-member limit (:meth:`read`'s bound,
        for bytes a caller already holds)."""
        cap = self.limits.max_member_size if max_size is None else min(max_size, self.limits.max_member_size)
        if size > cap:
            raise ArchiveLimitError(f"member is {size} bytes, limit here is {cap}", member=self.member_label(name))

    def read(self, name: str, *, max_size: int | None = None) -> bytes:
        """The whole member, CRC-checked, never more than its declared size or ``max_size``."""
        info = self.info(name)
        where = self.member_label(name)
        self.check_size(name, info.size, max_size)
        try:
            if info.stored:
                chunks = self._read_stored(info, where)
            else:
                chunks = self._inflate(info, where)
        except zipfile.BadZipFile as exc:
            raise CorruptArchiveError(f"corrupt member ({exc})", member=where) from None
        except (zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise CorruptArchiveError(f"cannot decompress member ({exc})", member=where) from None
        data = b"".join(chunks)
        if len(data) != info.size:
            raise CorruptArchiveError(f"member has {len(data)} bytes, declared {info.size}", member=where)
        if zlib.crc32(data) & 0xFFFFFFFF != info.crc:
            raise CorruptArchiveError("CRC-32 mismatch (corrupt data)", member=where)
        return data

    def _read_stored(self, info: MemberInfo, where: str) -> list[bytes]:
        chunks: list[bytes] = []
        got = 0
        with self._zip.open(info.name) as stream:
            while True:
                chunk = stream.read(min(1 * MiB, info.size - got + 1))
                if not chunk:
                    break
                got += len(chunk)
                if got > info.size:
                    raise CorruptArchiveError(f"member holds more than its declared {info.size} bytes", member=where)
                chunks.append(chunk)
        return chunks

    def _inflate(self, info: MemberInfo, where: str) -> list[bytes]:
        """Inflate a deflated member ourselves, checking the ratio against the bytes really consumed.

        Why: the central directory's compressed size is a claim. Checked alone, it let a 7.8 MB archive
        inflate 1.2 GB (members whose declared compressed ranges overlap, or a declared size far above
        the real deflate stream). Here the ratio is inflated bytes / compressed bytes the stream has
        actually used, checked after every step, and the stream must end inside its declared size.
        """
        limits = self.limits
        start = self._local_data_start(info, where)
        inflater = zlib.decompressobj(-15)
        chunks: list[bytes] = []
        got = 0
        fed = 0
        pending = b""
        while not inflater.eof:
            if not pending:
                want = min(256 * 1024, info.compressed_size - fed)
                if want <= 0:
                    raise CorruptArchiveError("deflate stream runs past its declared compressed size", member=where)
                self._fh.seek(start + fed)
                pending = self._fh.read(want)
                if not pending:
                    raise CorruptArchiveError("deflate stream truncated", member=where)
                fed += len(pending)
            chunk = inflater.decompress(pending, min(1 * MiB, info.size - got + 1))
            pending = inflater.unconsumed_tail
            got += len(chunk)
            if got > info.size:
                raise CorruptArchiveError(f"member holds more than its declared {info.size} bytes", member=where)
            consumed = fed - len(pending) - len(inflater.unused_data)
            if got > limits.ratio_floor and got > limits.max_ratio * max(consumed, 1):
                raise ArchiveLimitError(
                    f"compression ratio above {limits.max_ratio:.0f}:1 while inflating "
                    f"({got} bytes from {consumed}; zip bomb?)", member=where,
                )
            chunks.append(chunk)
        return chunks

    def _local_data_start(self, info: MemberInfo, where: str) -> int:
        self._fh.seek(info.header_offset)
        header = self._fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CorruptArchiveError("bad local file header", member=where)
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        zinfo = self._zip.getinfo(info.name)
        expected = zinfo.orig_filename.encode("utf-8" if zinfo.flag_bits & 0x800 else "cp437", "replace")
        if self._fh.read(name_len) != expected:  # as zipfile checks: one member, one name
            raise CorruptArchiveError("file name in the local header differs from the central directory", member=where)
        return info.header_offset + 30 + name_len + extra_len

    def data_offset(self, name: str) -> int | None:
        """Absolute file offset of a *stored* member's bytes, for zero-copy reads; None otherwise."""
        info = self.info(name)
        if not info.stored or self.path is None:
            return None
        return self._local_data_start(info, self.member_label(name))

    def open_nested(self, name: str) -> "SafeZip":
        """A zip stored as a member, opened from memory with the same limits one level deeper."""
        data = self.read(name)
        return SafeZip(data, label=self.member_label(name), limits=self.limits, depth=self.depth + 1)

    def iter_members(self) -> Iterator[MemberInfo]:
        return iter(self._members.values())

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        try:
            self._zip.close()
        finally:
            self._fh.close()

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
