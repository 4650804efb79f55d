"""Property tests: whatever bytes an archive holds, only :class:`ArchiveError` subclasses escape.

Inputs are random bytes and mutations (flips, overwrites, inserts, deletes, truncations, splices)
of real fixture members, fed to each layer: the zip container, the safe pickle reader, the torch
zip reader, the HDF5 layer, the Keras config analysis and whole-archive reading. Bounded for CI:
200 examples per property, no deadline. ``scripts/fuzz.py`` runs the same idea for hours.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.pytorch.torchzip import load_torch_bytes
from converters.tensorflow.keras_graph import analyse_config
from ptycho_bridge import read_archive
from ptycho_bridge.errors import ArchiveError
from ptycho_bridge.formats.base import read_json
from ptycho_bridge.io.h5 import get_attr, open_h5, read_array, walk_datasets
from ptycho_bridge.io.safepickle import decode, load_inert
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.ops.report import validate_path
from tests._support import FIXTURES_DIR  # noqa: E402

FIX = FIXTURES_DIR
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _seeds() -> dict[str, bytes]:
    if not FIX.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIX}")
    tf = _members(FIX / "tf_N64_gs1" / "wts.h5.zip")
    torch = _members(FIX / "torch_N64_gs1" / "wts.h5.zip")
    keras = _members_bytes(tf["diffraction_to_obj/model.keras"])
    return {
        "tf/manifest.dill": tf["manifest.dill"],
        "tf/params.dill": tf["diffraction_to_obj/params.dill"],
        "tf/custom_objects.dill": tf["diffraction_to_obj/custom_objects.dill"],
        "tf/model.h5": tf["diffraction_to_obj/model.h5"],
        "tf/model.weights.h5": keras["model.weights.h5"],
        "tf/config.json": keras["config.json"],
        "torch/manifest.dill": torch["manifest.dill"],
        "torch/params.dill": torch["diffraction_to_obj/params.dill"],
        "torch/sentinel.pth": torch["autoencoder/model.pth"],
        "torch/metadata.pt": torch["torch_scaling_metadata.pt"],
    }


def _members_bytes(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return _seeds()


@pytest.fixture(scope="module")
def torch_bundle() -> dict[str, bytes]:
    if not FIX.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIX}")
    return _members(FIX / "torch_N64_gs1" / "wts.h5.zip")


@st.composite
def mutate(draw: st.DrawFn, seed: bytes) -> bytes:
    """1–8 random edits of ``seed``: bit flips, byte overwrites, inserts, deletes, truncation, splices."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            data = bytearray(draw(st.binary(min_size=1, max_size=16)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "interesting"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":  # copy a chunk of the seed to another place (structure-preserving noise)
            start = draw(st.integers(0, len(seed) - 1))
            data[pos:pos] = seed[start:start + draw(st.integers(1, 256))]
        else:  # boundary values for length/count fields
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1]))
            data[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(data)


def _only_archive_errors(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except ArchiveError:
        pass


def _zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------------------
def _read_all(data: bytes) -> None:
    with SafeZip(data, label="fuzz.zip") as zf:
        for name in zf.names():
            zf.read(name)


@SETTINGS
@given(st.binary(max_size=4096))
def test_safezip_random_bytes(data: bytes) -> None:
    _only_archive_errors(_read_all, data)
    _only_archive_errors(_read_all, b"PK\x03\x04" + data)


@SETTINGS
@given(st.data())
def test_safezip_mutated_real_zips(seeds: dict[str, bytes], data: st.DataObject) -> None:
    seed = seeds[data.draw(st.sampled_from(["torch/sentinel.pth", "torch/metadata.pt"]))]
    _only_archive_errors(_read_all, data.draw(mutate(seed)))


# ---------------------------------------------------------------------------------------------------
# Pickles
# ---------------------------------------------------------------------------------------------------
def _unpickle(data: bytes) -> None:
    decode(load_inert(data, member="fuzz.pkl"), member="fuzz.pkl")


@SETTINGS
@given(st.binary(max_size=2048))
def test_pickle_reader_random_bytes(data: bytes) -> None:
    _only_archive_errors(_unpickle, data)
    _only_archive_errors(_unpickle, b"\x80\x04" + data)


@SETTINGS
@given(st.data())
def test_pickle_reader_mutated_real_pickles(seeds: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["tf/manifest.dill", "tf/params.dill", "tf/custom_objects.dill",
                                      "torch/manifest.dill", "torch/params.dill"]))
    _only_archive_errors(_unpickle, data.draw(mutate(seeds[name])))


@SETTINGS
@given(st.data())
def test_torch_reader_mutated_real_files(seeds: dict[str, bytes], data: st.DataObject) -> None:
    seed = seeds[data.draw(st.sampled_from(["torch/sentinel.pth", "torch/metadata.pt"]))]
    inner = _members_bytes(seed)
    pkl = next(n for n in inner if n.endswith("/data.pkl"))
    if data.draw(st.booleans()):  # mutate the pickle inside a valid zip, so the zip CRC does not stop it
        inner[pkl] = data.draw(mutate(inner[pkl]))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n, d in inner.items():
                zf.writestr(n, d)
        blob = buf.getvalue()
    else:
        blob = data.draw(mutate(seed))
    _only_archive_errors(load_torch_bytes, blob, label="fuzz.pth")


# ---------------------------------------------------------------------------------------------------
# HDF5 and Keras config
# ---------------------------------------------------------------------------------------------------
def _h5_all(data: bytes) -> None:
    f = open_h5(data, member="fuzz.h5")
    try:
        for _, dset in walk_datasets(f, member="fuzz.h5"):
            read_array(dset, member="fuzz.h5")
        f.attrs.get("intensity_scale")
    finally:
        f.close()


@SETTINGS
@given(st.data())
def test_h5_reader_mutated_real_file(seeds: dict[str, bytes], data: st.DataObject) -> None:
    _only_archive_errors(_h5_all, data.draw(mutate(seeds["tf/model.h5"])))


@SETTINGS
@given(st.data())
def test_h5_global_heap_mutations(seeds: dict[str, bytes], data: st.DataObject) -> None:
    """Edits inside the global heap (layer name strings): libhdf5 must never be handed one it loops on."""
    image = seeds["tf/model.weights.h5"]
    start = image.find(b"GCOL")
    size = int.from_bytes(image[start + 8:start + 16], "little")
    region = data.draw(mutate(image[start:start + size]))
    mutated = image[:start] + region[:size].ljust(size, b"\0") + image[start + size:]

    def names() -> None:
        f = open_h5(mutated, member="fuzz.h5")
        try:
            group = f["layers"]
            for key in [k for k in group if k.startswith("conv2d")][:8]:
                get_attr(group[key]["vars"], "name", member="fuzz.h5")  # a variable-length string
        except (KeyError, OSError, ValueError, RuntimeError, TypeError):
            pass  # h5py's own errors while navigating: not what this property is about
        finally:
            f.close()

    _only_archive_errors(names)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _replace_somewhere(doc: Any, data: st.DataObject) -> Any:
    """Walk a random path into ``doc`` and replace what is there with random JSON."""
    if not isinstance(doc, (dict, list)) or not doc or data.draw(st.integers(0, 5)) == 0:
        return data.draw(json_values)
    if isinstance(doc, dict):
        key = data.draw(st.sampled_from(sorted(doc)))
        return {**doc, key: _replace_somewhere(doc[key], data)}
    i = data.draw(st.integers(0, len(doc) - 1))
    return doc[:i] + [_replace_somewhere(doc[i], data)] + doc[i + 1:]


@SETTINGS
@given(st.data())
def test_keras_config_mutations(seeds: dict[str, bytes], data: st.DataObject) -> None:
    config = json.loads(seeds["tf/config.json"])
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 3))):
            config = _replace_somewhere(config, data)
        raw = json.dumps(config).encode()
    else:
        raw = data.draw(mutate(seeds["tf/config.json"]))

    def run() -> None:
        with SafeZip(_zip_of("config.json", raw), label="model.keras") as zf:
            doc = read_json(zf, "config.json")
        if isinstance(doc, dict):
            analyse_config(doc, member="model.keras:config.json")

    _only_archive_errors(run)


# ---------------------------------------------------------------------------------------------------
# Whole archives
# ---------------------------------------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_read_archive_with_a_mutated_member(torch_bundle: dict[str, bytes], tmp_path: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["manifest.dill", "diffraction_to_obj/params.dill", "autoencoder/model.pth",
                                      "torch_scaling_metadata.pt"]))
    members = {**torch_bundle, name: data.draw(mutate(torch_bundle[name]))}
    path = tmp_path / "wts.h5.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    _only_archive_errors(read_archive, path)
    report = validate_path(path)  # must never raise for a bad archive
    assert report["valid"] or report["errors"]
