"""Tests for ptycho_bridge.container.SafeZip: bounded, read-only zip access.

Every hostile container is crafted here with zipfile (plus byte patches for what zipfile refuses to
write); the expectations come from the zip format and ../shared/docs/design.md §2, not from the code.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import pytest

from ptycho_bridge import read_archive
from ptycho_bridge.errors import (
    ArchiveLimitError,
    CorruptArchiveError,
    UnsafeArchiveError,
)
from ptycho_bridge.io.safezip import DEFAULT_LIMITS, Limits, SafeZip
from tests._support import patch_central_directory, read_member

MiB = 1024 * 1024


def make_zip(members: list[tuple[str | zipfile.ZipInfo, bytes]], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# Reading real archives
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["tf_N64_gs1", "torch_N64_gs1"])
def test_reads_every_member_like_zipfile(fixtures_dir: Path, case: str) -> None:
    path = fixtures_dir / case / "wts.h5.zip"
    with zipfile.ZipFile(path) as ref, SafeZip(path) as zf:
        assert zf.label == "wts.h5.zip"
        assert zf.names() == ref.namelist()
        assert zf.total_size == sum(i.file_size for i in ref.infolist())
        for info in ref.infolist():
            assert info.filename in zf
            assert zf.info(info.filename).size == info.file_size
            assert zf.read(info.filename) == ref.read(info.filename)
        assert zf.member_label("manifest.dill") == "wts.h5.zip:manifest.dill"
    assert zf.closed


def test_nested_zip_label_and_contents(fixtures_dir: Path) -> None:
    path = fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"
    keras_bytes = read_member(path, "diffraction_to_obj/model.keras")
    with SafeZip(path) as zf, zf.open_nested("diffraction_to_obj/model.keras") as inner:
        assert inner.depth == 1
        assert inner.label == "wts.h5.zip:diffraction_to_obj/model.keras"
        with zipfile.ZipFile(io.BytesIO(keras_bytes)) as ref:
            assert inner.names() == ref.namelist()
            assert inner.read("model.weights.h5") == ref.read("model.weights.h5")
        assert inner.member_label("config.json") == "wts.h5.zip:diffraction_to_obj/model.keras:config.json"


def test_sources_bytes_and_stream() -> None:
    data = make_zip([("a.txt", b"hello")])
    with SafeZip(data, label="mem.zip") as zf:
        assert zf.read("a.txt") == b"hello" and zf.label == "mem.zip"
    with SafeZip(io.BytesIO(data)) as zf:
        assert zf.read("a.txt") == b"hello"


def test_directory_entries_are_skipped() -> None:
    with SafeZip(make_zip([("d/", b""), ("d/a", b"1")])) as zf:
        assert zf.names() == ["d/a"]


def test_data_offset_points_at_stored_bytes(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 64
    path = tmp_path / "s.zip"
    path.write_bytes(make_zip([("w.bin", payload), ("c.txt", b"x" * 1000)], compression=zipfile.ZIP_STORED))
    with SafeZip(path) as zf:
        off = zf.data_offset("w.bin")
        assert off is not None
        assert path.read_bytes()[off : off + len(payload)] == payload
    path2 = tmp_path / "d.zip"
    path2.write_bytes(make_zip([("w.bin", payload)]))
    with SafeZip(path2) as zf:
        assert zf.data_offset("w.bin") is None  # deflated: no zero-copy view


def test_missing_member_is_named() -> None:
    with SafeZip(make_zip([("a", b"1")]), label="x.zip") as zf:
        with pytest.raises(CorruptArchiveError, match=r"x\.zip:nope: member not found"):
            zf.read("nope")


# ---------------------------------------------------------------------------------------------------
# Not a zip / damaged zips
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [b"", b"just some text\n" * 50, b"PK\x03\x04" + b"\0" * 100],
    ids=["empty", "text", "local-header-only"],
)
def test_not_a_zip(data: bytes) -> None:
    with pytest.raises(CorruptArchiveError, match="not a readable zip"):
        SafeZip(data, label="bad.zip")


def test_truncated_zip(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "torch_N64_gs1" / "wts.h5.zip").read_bytes()
    with pytest.raises(CorruptArchiveError, match=r"^bad\.zip: not a readable zip"):
        SafeZip(data[: len(data) // 2], label="bad.zip")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CorruptArchiveError, match="file not found"):
        SafeZip(tmp_path / "absent.zip")
    with pytest.raises(CorruptArchiveError, match="is a directory"):
        SafeZip(tmp_path)


def test_bad_crc_is_detected() -> None:
    payload = b"0123456789" * 100
    data = bytearray(make_zip([("m.bin", payload)], compression=zipfile.ZIP_STORED))
    data[bytes(data).find(payload) + 500] ^= 0xFF
    with SafeZip(bytes(data), label="z.zip") as zf:
        with pytest.raises(CorruptArchiveError, match=r"z\.zip:m\.bin: .*CRC"):
            zf.read("m.bin")


# ---------------------------------------------------------------------------------------------------
# Hostile names and entries
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil", "zip slip"),
        ("a/../../evil", "zip slip"),
        ("/etc/passwd", "absolute member path"),
        ("C:/Windows/evil", "drive letter"),
        ("c:evil", "drive letter"),
        ("a\\..\\evil", "backslash"),
        ("x" * 600, "longer than 512"),
    ],
)
def test_unsafe_member_names(name: str, reason: str) -> None:
    data = make_zip([("ok.txt", b"1"), (name, b"2")])
    with pytest.raises(UnsafeArchiveError, match=reason) as err:
        SafeZip(data, label="bad.zip")
    assert err.value.member == f"bad.zip:{name}"


def test_name_length_limit_is_overridable() -> None:
    data = make_zip([("x" * 600, b"2")])
    with SafeZip(data, limits=Limits(max_name_length=1000)) as zf:
        assert zf.read("x" * 600) == b"2"


def test_symlink_entry() -> None:
    info = zipfile.ZipInfo("d/link")
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    with pytest.raises(UnsafeArchiveError, match="symbolic link") as err:
        SafeZip(make_zip([(info, b"/etc/passwd")]), label="s.zip")
    assert err.value.member == "s.zip:d/link"


def test_regular_unix_file_mode_is_fine() -> None:
    info = zipfile.ZipInfo("f")
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    with SafeZip(make_zip([(info, b"data")])) as zf:
        assert zf.read("f") == b"data"


def test_encrypted_flag() -> None:
    data = patch_central_directory(make_zip([("a", b"1"), ("secret", b"2")]), "secret", flag_bits=0x1)
    with pytest.raises(UnsafeArchiveError, match="encrypted") as err:
        SafeZip(data, label="e.zip")
    assert err.value.member == "e.zip:secret"


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("names", [["a", "a"], ["a", "a/"]])
def test_duplicate_members(names: list[str]) -> None:
    with pytest.raises(UnsafeArchiveError, match="duplicate member name"):
        SafeZip(make_zip([(n, b"" if n.endswith("/") else b"1") for n in names]))


def test_only_stored_and_deflated() -> None:
    data = make_zip([("b.bin", b"x" * 100)], compression=zipfile.ZIP_BZIP2)
    with pytest.raises(UnsafeArchiveError, match="compression method 12"):
        SafeZip(data)


# ---------------------------------------------------------------------------------------------------
# Size bounds (zip bombs, lies)
# ---------------------------------------------------------------------------------------------------
def test_compression_ratio_bomb() -> None:
    data = make_zip([("bomb.bin", bytes(50 * MiB))])
    assert len(data) < 100_000
    with pytest.raises(ArchiveLimitError, match=r"compression ratio \d+:1 exceeds the limit 200:1") as err:
        SafeZip(data, label="b.zip")
    assert err.value.member == "b.zip:bomb.bin"


def test_ratio_limits_are_overridable_and_floor_spares_small_members() -> None:
    small = make_zip([("zeros", bytes(512 * 1024))])  # ratio ~500:1 but under the 1 MiB floor
    with SafeZip(small) as zf:
        assert zf.read("zeros") == bytes(512 * 1024)
    big = make_zip([("zeros", bytes(2 * MiB))])
    with pytest.raises(ArchiveLimitError, match="compression ratio"):
        SafeZip(big)
    with SafeZip(big, limits=DEFAULT_LIMITS.scaled(max_ratio=10_000.0)) as zf:
        assert len(zf.read("zeros")) == 2 * MiB
    with pytest.raises(ArchiveLimitError, match="compression ratio"):
        SafeZip(small, limits=Limits(ratio_floor=1024))


def test_declared_size_over_member_limit() -> None:
    data = make_zip([("m", b"x" * 10_000)])
    with pytest.raises(ArchiveLimitError, match="declared size 10000 bytes exceeds the per-member limit 4096"):
        SafeZip(data, limits=Limits(max_member_size=4096))


def test_total_size_and_member_count_limits(fixtures_dir: Path) -> None:
    path = fixtures_dir / "tf_N64_gs1" / "wts.h5.zip"
    with pytest.raises(ArchiveLimitError, match="9 members, limit is 3"):
        SafeZip(path, limits=Limits(max_members=3))
    with pytest.raises(ArchiveLimitError, match="total uncompressed size exceeds the limit 1000000"):
        SafeZip(path, limits=Limits(max_total_size=1_000_000))
    # read_archive passes limits through to the container
    with pytest.raises(ArchiveLimitError, match="limit is 3"):
        read_archive(path, limits=Limits(max_members=3))


def test_read_max_size_cap() -> None:
    with SafeZip(make_zip([("m", b"x" * 5000)])) as zf:
        assert zf.read("m", max_size=5000) == b"x" * 5000
        with pytest.raises(ArchiveLimitError, match="member is 5000 bytes, limit here is 100"):
            zf.read("m", max_size=100)


def test_declared_size_lie_small_never_inflates() -> None:
    """Central directory claims 64 bytes; the deflate stream holds 50 MiB of zeros."""
    data = make_zip([("lie", bytes(50 * MiB))])
    lie = patch_central_directory(data, "lie", file_size=64)
    with SafeZip(lie, label="l.zip") as zf:  # the ratio check sees 64 bytes: passes the scan
        with pytest.raises(CorruptArchiveError, match=r"l\.zip:lie: member holds more than its declared 64 bytes"):
            zf.read("lie")
    # even with a CRC that matches the 64-byte prefix: the stream goes on past the declared size (issue 12)
    lie = patch_central_directory(data, "lie", file_size=64, crc=zlib.crc32(bytes(64)))
    with SafeZip(lie) as zf:
        with pytest.raises(CorruptArchiveError, match="more than its declared 64 bytes"):
            zf.read("lie")


def test_declared_size_lie_large() -> None:
    data = make_zip([("m", b"abc" * 1000)])
    lie = patch_central_directory(data, "m", file_size=5000)
    with SafeZip(lie, label="l.zip") as zf:
        with pytest.raises(CorruptArchiveError, match=r"l\.zip:m: "):
            zf.read("m")


# ---------------------------------------------------------------------------------------------------
# Nesting
# ---------------------------------------------------------------------------------------------------
def _nested(depth: int) -> bytes:
    data = make_zip([("leaf.txt", b"leaf")])
    for _ in range(depth):
        data = make_zip([("inner.zip", data)])
    return data


def test_nesting_depth_default_and_override() -> None:
    with SafeZip(_nested(3), label="n.zip") as z0:
        z1 = z0.open_nested("inner.zip")
        z2 = z1.open_nested("inner.zip")
        assert z2.depth == 2 and z2.label == "n.zip:inner.zip:inner.zip"
        with pytest.raises(ArchiveLimitError, match="nested deeper than 2 levels"):
            z2.open_nested("inner.zip")
    with SafeZip(_nested(3), limits=Limits(max_nesting=3)) as z0:
        z3 = z0.open_nested("inner.zip").open_nested("inner.zip").open_nested("inner.zip")
        assert z3.read("leaf.txt") == b"leaf"
    with SafeZip(_nested(1), limits=Limits(max_nesting=0)) as z0:
        with pytest.raises(ArchiveLimitError, match="nested deeper than 0 levels"):
            z0.open_nested("inner.zip")


def test_nested_zip_obeys_the_same_checks() -> None:
    inner = make_zip([("../escape", b"x")])
    with SafeZip(make_zip([("inner.zip", inner)]), label="o.zip") as zf:
        with pytest.raises(UnsafeArchiveError, match="zip slip") as err:
            zf.open_nested("inner.zip")
    assert err.value.member == "o.zip:inner.zip:../escape"


def test_nothing_is_extracted(tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SafeZip(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip") as zf:
        for name in zf.names():
            zf.read(name)
        with zf.open_nested("diffraction_to_obj/model.keras") as inner:
            for name in inner.names():
                inner.read(name)
    read_archive(fixtures_dir / "tf_N64_gs1" / "wts.h5.zip")
    assert list(tmp_path.iterdir()) == []


def test_deflated_member_local_name_must_match() -> None:
    """Our inflate loop (issue 12) keeps zipfile's check: the local header names the same member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("aaaa", b"x" * 1000)
    data = bytearray(buf.getvalue())
    data[30:34] = b"bbbb"  # the first local header's name
    with SafeZip(bytes(data), label="n.zip") as zf:
        with pytest.raises(CorruptArchiveError, match=r"n\.zip:aaaa: file name in the local header differs"):
            zf.read("aaaa")
