"""Heavy third-party modules bound at import time but imported on first use.

Why: ``inspect`` of most archives needs no array library at all (issue 16: it answers from the zip
directory, the JSON/pickle metadata and HDF5 metadata), yet numpy's import alone costs 50-110 ms,
more than the rest of the command. Modules on that path write ``from ptycho_bridge.lazy import numpy
as np`` instead of ``import numpy as np``: the name is bound at the top of the module as usual, and
numpy is imported the first time an attribute is looked up (``np.frombuffer``), after which the
stand-in holds numpy's own namespace, so later lookups cost what a module attribute costs.

The stdlib's ``importlib.util.LazyLoader`` cannot do this for numpy on Python 3.11: the second
``import numpy`` anywhere (h5py, another of our modules) reads ``numpy.__spec__`` and so loads it.

Code that only asks "is this an ndarray?" calls :func:`is_loaded` first: when numpy was never
imported, no value can be an ndarray, and the question must not import it. ``tests/cli/test_startup.py``
asserts which commands stay numpy-free.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any


class LazyModule(types.ModuleType):
    """A module object standing in for ``target`` until an attribute of it is first used."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.__dict__["_lazy_target"] = target

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update(module.__dict__)  # from now on a plain attribute hit, no __getattr__ call
        return getattr(module, attr)


def is_loaded(name: str) -> bool:
    """Whether ``name`` has been imported (by anyone): lets ``isinstance`` checks skip a lazy import."""
    return name in sys.modules


if TYPE_CHECKING:  # type checkers see the real module and its types
    import numpy as numpy
else:
    numpy = LazyModule("numpy")
