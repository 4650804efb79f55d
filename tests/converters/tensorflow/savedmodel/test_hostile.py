"""Hostile SavedModel-era archives: each is refused with a specific project error naming member and field.

Why: every byte of a legacy archive is untrusted. Each case mutates the real fixture just enough to
reach one check of the new parsers (:mod:`.hostile_build` keeps the surrounding bytes valid), then
reads the archive *and loads every tensor*. The error must be an :class:`ArchiveError` subclass (never
a bare ``ValueError``), its message must start with the member label (``wts.h5.zip:…``) and name a
``[field]``, and it must come fast. A few cases also go through the CLI: exit 1, one ``error:`` line.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from converters.tensorflow.savedmodel.crc import masked_crc32c
from converters.tensorflow.savedmodel.sstable import MAGIC
from ptycho_bridge import read_archive
from ptycho_bridge.cli import main
from ptycho_bridge.errors import (
    ArchiveError,
    ArchiveLimitError,
    ChecksumError,
    FormatError,
    PickleDecodeError,
    SpecError,
    UnsafeArchiveError,
    UnsupportedError,
)
from tests._support import SAVEDMODEL_DIR
from tests.converters.tensorflow.savedmodel import hostile_build as hb

pytestmark = pytest.mark.skipif(not (SAVEDMODEL_DIR / "tf215_N64_gs1" / "wts.h5.zip").exists(),
                                reason=f"SavedModel-era fixture absent ({SAVEDMODEL_DIR})")

D2O_KERNEL = "layer_with_weights-3/kernel/.ATTRIBUTES/VARIABLE_VALUE"
Case = Callable[[dict[str, bytes]], None]


def entry(key: str, fn: Callable[[Any], None]) -> Case:
    def build(f: dict[str, bytes]) -> None:
        f[hb.INDEX] = hb.edit_entry(f[hb.INDEX], key, fn)
    return build


def setattrs(**kw: Any) -> Callable[[Any], None]:
    return lambda m: [setattr(m, k, v) for k, v in kw.items()]


def truncate_index(f: dict[str, bytes]) -> None:
    f[hb.INDEX] = f[hb.INDEX][:-20]


def truncate_shard(f: dict[str, bytes]) -> None:
    f[hb.DATA] = f[hb.DATA][: len(f[hb.DATA]) // 2]


def lying_offset(f: dict[str, bytes]) -> None:
    entry(D2O_KERNEL, setattrs(offset=len(f[hb.DATA]) - 100))(f)


def overlapping(f: dict[str, bytes]) -> None:
    other = hb.protowire.message_class("BundleEntryProto")()
    other.ParseFromString(dict(hb.rows(f[hb.INDEX]))[b"layer_with_weights-2/kernel/.ATTRIBUTES/VARIABLE_VALUE"])
    entry(D2O_KERNEL, setattrs(offset=other.offset))(f)


def flip_data_byte(f: dict[str, bytes]) -> None:
    e = hb.protowire.message_class("BundleEntryProto")()
    e.ParseFromString(dict(hb.rows(f[hb.INDEX]))[D2O_KERNEL.encode()])
    data = bytearray(f[hb.DATA])
    data[e.offset + 17] ^= 0x01
    f[hb.DATA] = bytes(data)


def flip_index_byte(f: dict[str, bytes]) -> None:
    data = bytearray(f[hb.INDEX])
    data[100] ^= 0x01  # inside the data block, trailer crc left as is
    f[hb.INDEX] = bytes(data)


def varint_overflow_footer(f: dict[str, bytes]) -> None:
    idx = f[hb.INDEX]
    f[hb.INDEX] = idx[:-48] + b"\xff" * 11 + b"\x00" * 29 + struct.pack("<Q", MAGIC)


def varint_overflow_entry(f: dict[str, bytes]) -> None:
    # one entry whose 'shared' varint32 is 6 bytes long; block crc recomputed so the varint is reached
    bad = b"\xff\xff\xff\xff\xff\x01" + b"\x00\x00"
    contents = bad + struct.pack("<I", 0) + struct.pack("<I", 1)
    crc = masked_crc32c(contents + b"\0")
    body = contents + b"\0" + struct.pack("<I", crc)
    meta = hb.block([])
    meta_b = meta + b"\0" + struct.pack("<I", masked_crc32c(meta + b"\0"))
    ind = hb.block([(b"z", hb.varint(0) + hb.varint(len(contents)))], 1)
    ind_b = ind + b"\0" + struct.pack("<I", masked_crc32c(ind + b"\0"))
    handles = hb.varint(len(body)) + hb.varint(len(meta)) + hb.varint(len(body) + len(meta_b)) + hb.varint(len(ind))
    f[hb.INDEX] = body + meta_b + ind_b + handles + b"\0" * (40 - len(handles)) + struct.pack("<Q", MAGIC)


def compressed(f: dict[str, bytes]) -> None:
    f[hb.INDEX] = hb.table(hb.rows(f[hb.INDEX]), ctype=1)


def unsorted_keys(f: dict[str, bytes]) -> None:
    r = hb.rows(f[hb.INDEX])
    r[2], r[3] = r[3], r[2]
    f[hb.INDEX] = hb.table(r)


def huge_shape(m: Any) -> None:
    del m.shape.dim[:]
    for _ in range(2):
        m.shape.dim.add(size=2**40)


def negative_dim(m: Any) -> None:
    m.shape.dim[0].size = -1


def add_slice(m: Any) -> None:
    m.slices.add().extent.add(start=0, length=1)


def swap_full_names(f: dict[str, bytes]) -> None:
    def fn(g: Any) -> None:
        attrs = [a for n in g.nodes for a in n.attributes]
        a = next(x for x in attrs if x.checkpoint_key == "layer_with_weights-8/kernel/.ATTRIBUTES/VARIABLE_VALUE")
        b = next(x for x in attrs if x.checkpoint_key == "layer_with_weights-9/kernel/.ATTRIBUTES/VARIABLE_VALUE")
        a.full_name, b.full_name = b.full_name, a.full_name
    hb.edit_object_graph(f, fn)


def deep_json(f: dict[str, bytes]) -> None:
    hb.set_root_json_text(f, "[" * 200_000 + "]" * 200_000)


def layers(fn: Callable[[list[dict[str, Any]]], None]) -> Case:
    return lambda f: hb.edit_root_config(f, lambda cfg: fn(cfg["config"]["layers"]))


def extra_lambda(ls: list[dict[str, Any]]) -> None:
    evil = json.loads(json.dumps(next(x for x in ls if x["name"] == "amp")))
    evil["name"] = evil["config"]["name"] = "evil"
    evil["inbound_nodes"] = [[["input", 0, 0, {}]]]
    ls.insert(1, evil)


def renamed_lambda(f: dict[str, bytes]) -> None:
    def fn(cfg: dict[str, Any]) -> None:  # renamed everywhere (layer, consumers, output_layers)
        cfg["config"] = json.loads(json.dumps(cfg["config"]).replace('"trimmed_obj"', '"trimmed_objx"'))
    hb.edit_root_config(f, fn)


def metadata_garbage(f: dict[str, bytes]) -> None:
    f[hb.META] = b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 32  # field 1, length ~4 GiB


def extra_tensor(f: dict[str, bytes]) -> None:
    offset = len(f[hb.DATA])
    f[hb.DATA] += b"\0\0\x80\x3f"
    r = hb.rows(f[hb.INDEX])
    e = hb.protowire.message_class("BundleEntryProto")(dtype=1, offset=offset, size=4,
                                                       crc32c=masked_crc32c(b"\0\0\x80\x3f"))
    e.shape.dim.add(size=1)
    f[hb.INDEX] = hb.table(r + [(b"zzz_extra/.ATTRIBUTES/VARIABLE_VALUE", e.SerializeToString())])


def lambda_module(ls: list[dict[str, Any]]) -> None:
    next(x for x in ls if x["name"] == "phi")["config"]["module"] = "os"


def tf_op(ls: list[dict[str, Any]]) -> None:
    layer = next(x for x in ls if x["name"] == "tf.nn.silu")
    layer["config"]["function"] = "io.write_file"


def conv_activation(ls: list[dict[str, Any]]) -> None:
    next(x for x in ls if x["name"] == "conv2d_7")["config"]["activation"] = "relu"


def rewire_obj(ls: list[dict[str, Any]]) -> None:
    obj = next(x for x in ls if x["name"] == "obj")
    obj["inbound_nodes"][0].reverse()  # (phase, amp)


def metadata_node_name(f: dict[str, bytes]) -> None:
    msg = hb.metadata_msg(f[hb.META])
    node = next(n for n in msg.nodes if n.node_path == "root.layer_with_weights-3")
    node.metadata = node.metadata.replace('"name": "conv2d_3"', '"name": "conv2d_9"', 1)
    f[hb.META] = msg.SerializeToString()


def pickled_call(f: dict[str, bytes]) -> None:
    f[f"{hb.D2O}/custom_objects.dill"] = b"(dp0\nS'x'\ncos\nsystem\n(S'echo pwned'\ntRs."


CASES: dict[str, Case] = {
    "truncated index (footer cut)": truncate_index,
    "truncated data shard": truncate_shard,
    "lying offset (past shard end)": lying_offset,
    "lying size (+4 bytes)": lambda f: entry(D2O_KERNEL, lambda m: setattr(m, "size", m.size + 4))(f),
    "overlapping byte ranges": overlapping,
    "shard_id out of range": entry(D2O_KERNEL, setattrs(shard_id=3)),
    "header num_shards=2, shard missing": entry("", setattrs(num_shards=2)),
    "tensor crc32c mismatch (1 bit)": flip_data_byte,
    "entry crc32c field lies": entry(D2O_KERNEL, lambda m: setattr(m, "crc32c", m.crc32c ^ 1)),
    "index block crc mismatch": flip_index_byte,
    "varint overflow in footer": varint_overflow_footer,
    "varint32 overflow in block entry": varint_overflow_entry,
    "snappy-compressed block": compressed,
    "keys out of order": unsorted_keys,
    "huge declared shape 2^40 x 2^40": entry(D2O_KERNEL, huge_shape),
    "negative dimension": entry(D2O_KERNEL, negative_dim),
    "unsupported dtype (DT_RESOURCE)": entry(D2O_KERNEL, setattrs(dtype=20)),
    "sliced (partitioned) tensor": entry(D2O_KERNEL, add_slice),
    "big-endian bundle header": entry("", setattrs(endianness=1)),
    "object graph full_name swapped": swap_full_names,
    "keras_metadata JSON nested 200000 deep": deep_json,
    "extra Lambda 'evil'": layers(extra_lambda),
    "Lambda 'trimmed_obj' renamed": renamed_lambda,
    "keras_metadata.pb garbage": metadata_garbage,
    "protobuf groups nested 100000 deep": lambda f: f.__setitem__(hb.META, b"\x1b" * 100_000),
    "extra checkpoint tensor": extra_tensor,
    "Lambda 'phi' module os": layers(lambda_module),
    "TFOpLambda io.write_file": layers(tf_op),
    "conv2 activation relu (not linear)": layers(conv_activation),
    "obj wired (phase, amp)": layers(rewire_obj),
    "metadata node name vs config": metadata_node_name,
    "custom_objects.dill calls os.system": pickled_call,
}



# the error class each case must raise (ArchiveError subclasses only: no bare ValueError)
EXPECTED: dict[str, type[ArchiveError]] = {
    "truncated index (footer cut)": FormatError,
    "truncated data shard": FormatError,
    "lying offset (past shard end)": FormatError,
    "lying size (+4 bytes)": FormatError,
    "overlapping byte ranges": FormatError,
    "shard_id out of range": FormatError,
    "header num_shards=2, shard missing": FormatError,
    "tensor crc32c mismatch (1 bit)": ChecksumError,
    "entry crc32c field lies": ChecksumError,
    "index block crc mismatch": ChecksumError,
    "varint overflow in footer": FormatError,
    "varint32 overflow in block entry": FormatError,
    "snappy-compressed block": UnsupportedError,
    "keys out of order": FormatError,
    "huge declared shape 2^40 x 2^40": ArchiveLimitError,
    "negative dimension": FormatError,
    "unsupported dtype (DT_RESOURCE)": UnsupportedError,
    "sliced (partitioned) tensor": UnsupportedError,
    "big-endian bundle header": UnsupportedError,
    "object graph full_name swapped": SpecError,
    "keras_metadata JSON nested 200000 deep": ArchiveLimitError,
    "extra Lambda 'evil'": UnsafeArchiveError,
    "Lambda 'trimmed_obj' renamed": UnsafeArchiveError,
    "keras_metadata.pb garbage": FormatError,
    "protobuf groups nested 100000 deep": FormatError,
    "extra checkpoint tensor": SpecError,
    "Lambda 'phi' module os": UnsafeArchiveError,
    "TFOpLambda io.write_file": UnsafeArchiveError,
    "conv2 activation relu (not linear)": SpecError,
    "obj wired (phase, amp)": UnsafeArchiveError,
    "metadata node name vs config": SpecError,
    "custom_objects.dill calls os.system": PickleDecodeError,
}


@pytest.fixture(scope="module")
def base() -> dict[str, bytes]:
    return hb.members()


def build(name: str, base: dict[str, bytes], tmp_path: Path) -> Path:
    files = dict(base)
    CASES[name](files)
    path = tmp_path / "wts.h5.zip"
    path.write_bytes(hb.to_zip(files))
    return path


def test_every_case_has_an_expected_error() -> None:
    assert set(EXPECTED) == set(CASES) and len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_savedmodel_archive(name: str, base: dict[str, bytes], tmp_path: Path) -> None:
    path = build(name, base, tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(ArchiveError) as info:
        arch = read_archive(path)
        for entry in arch.models.values():
            dict(entry.tensors)
    elapsed = time.perf_counter() - t0
    exc = info.value
    assert isinstance(exc, EXPECTED[name]), f"{type(exc).__name__}: {exc}"
    assert str(exc).startswith("wts.h5.zip:"), str(exc)
    assert exc.field, f"no field named: {exc}"
    assert elapsed < 5.0


@pytest.mark.parametrize("name", ["lying offset (past shard end)", "tensor crc32c mismatch (1 bit)",
                                  "extra Lambda 'evil'", "varint overflow in footer"])
def test_hostile_savedmodel_cli(name: str, base: dict[str, bytes], tmp_path: Path) -> None:
    path = build(name, base, tmp_path)
    for verb in (["validate"], ["migrate", "-o", str(tmp_path / "out.zip")]):
        result = CliRunner().invoke(main, [verb[0], str(path), *verb[1:]])
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        if verb[0] == "migrate":
            assert len(errors) == 1 and lines == errors, result.stderr
            assert not (tmp_path / "out.zip").exists()
