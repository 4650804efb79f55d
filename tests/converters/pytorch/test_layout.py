"""converters/pytorch/layout.py: the torch format facts agree with their other users, and the light
modules (everything but network.py) import no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from converters.pytorch import layout
from ptycho_bridge.io.safepickle import TORCH_DTYPES
from ptycho_bridge.spec.mapping import TORCH_AUTOENCODER_PREFIXES
from tests._support import REPO


def test_writer_storage_table_is_the_inverse_of_the_reader_table() -> None:
    # the table write.py held before layout.py derived it (numpy dtype -> torch storage class)
    assert layout.STORAGE_CLASSES == {
        "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
        "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
        "uint8": "ByteStorage", "bool": "BoolStorage",
    }
    for dtype, storage in layout.STORAGE_CLASSES.items():
        assert layout.STORAGE_DTYPES[storage] == dtype
    assert layout.READ_ONLY_STORAGES <= set(layout.STORAGE_DTYPES)
    assert set(layout.STORAGE_DTYPES.values()) <= set(TORCH_DTYPES)  # the decoder knows every dtype we read


def test_key_orders_and_prefixes() -> None:
    assert sorted(layout.TORCH_CONFIG_READ_ORDER) == sorted(layout.TORCH_CONFIG_KEYS)
    assert layout.TORCH_CONFIG_READ_ORDER[0] == "model_config"
    assert layout.LIGHTNING_PREFIX == TORCH_AUTOENCODER_PREFIXES[0]


# read.py and spec.py are imported after ptycho_bridge: imported first, they hit the package init's
# formats.eras -> converters.pytorch.read cycle (see converters/pytorch/read.py); the others must
# import cleanly on their own.
@pytest.mark.parametrize("first, module", [
    ("", "converters.pytorch.layout"),
    ("", "converters.pytorch.configs"),
    ("", "converters.pytorch.torchzip"),
    ("", "converters.pytorch.write"),
    ("", "converters.pytorch.engine"),
    ("import ptycho_bridge", "converters.pytorch.read"),
    ("import ptycho_bridge", "converters.pytorch.spec"),
    ("", "ptycho_bridge.io.safepickle.writer"),
])
def test_light_modules_import_no_torch(first: str, module: str) -> None:
    script = f"{first}\nimport sys, {module}\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
