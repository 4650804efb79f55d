"""What this reader knows about the pickle format: opcode bytes and the global names it recognises.

Why: one place for the format's constants. The opcode byte values come from the standard library's
own table (:data:`pickletools.opcodes`), never typed by hand; the globals the decoder turns into plain
data (numpy, torch and pathlib spellings across their versions) and the torch dtype table shared with
:mod:`converters.pytorch.torchzip` are listed here once.
"""

from __future__ import annotations

import pickletools
import re
from pathlib import PurePosixPath, PureWindowsPath

# opcode name (``PROTO``, ``BINUNICODE`` …) -> its byte, from the standard library's table
OPCODES: dict[str, int] = {op.name: ord(op.code) for op in pickletools.opcodes}

MAX_PROTOCOL = 5  # newest protocol the interpreter understands (opcodes up to READONLY_BUFFER)

# opcodes recognised only to be refused, with the reason given
REFUSED_OPCODES: dict[str, str] = {
    "EXT1": "extension registry codes are not supported",
    "EXT2": "extension registry codes are not supported",
    "EXT4": "extension registry codes are not supported",
    "NEXT_BUFFER": "out-of-band buffers are not supported",
    "READONLY_BUFFER": "out-of-band buffers are not supported",
}

# torch dtype name -> (numpy dtype, bytes per element in the file)
TORCH_DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("<f4", 4), "float64": ("<f8", 8), "float16": ("<f2", 2), "bfloat16": ("<f4", 2),
    "int64": ("<i8", 8), "int32": ("<i4", 4), "int16": ("<i2", 2), "int8": ("i1", 1),
    "uint8": ("u1", 1), "uint16": ("<u2", 2), "uint32": ("<u4", 4), "uint64": ("<u8", 8),
    "bool": ("?", 1), "complex64": ("<c8", 8), "complex128": ("<c16", 16),
}
# torch's other names for those dtypes (``torch.float`` …), as ``_rebuild_tensor_v3`` may name them
TORCH_DTYPE_ALIASES: dict[str, str] = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
    "short": "int16", "cfloat": "complex64", "cdouble": "complex128",
}

# numpy moved numpy.core to numpy._core in 2.0; pickles name either
NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
NUMPY_DTYPE_STR = re.compile(r"[biufcSUOVMm][0-9]{0,5}")  # kind letter + item size, as numpy pickles it
NUMPY_DTYPE_KINDS = "biufcSU"
# the plain number dtypes a deferred decode names without numpy: pickled code -> numpy's name
NUMPY_PLAIN_CODES: dict[str, str] = {
    "b1": "bool", "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64", "u1": "uint8", "u2": "uint16",
    "u4": "uint32", "u8": "uint64", "f2": "float16", "f4": "float32", "f8": "float64", "c8": "complex64",
    "c16": "complex128",
}  # the dtype kinds decoded: bool/int/uint/float/complex/bytes/str

# ``module.Class`` of every pathlib class a pickle may name -> the pure path class that renders it
PATH_CLASSES = {
    f"{mod}.{name}": (PureWindowsPath if "Windows" in name else PurePosixPath)
    for mod in ("pathlib", "pathlib._local")
    for name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")
}
