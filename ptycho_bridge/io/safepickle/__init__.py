"""Safe pickle layer: read a pickle stream as inert data, importing nothing and calling nothing.

Why: every legacy member (``*.dill``, torch ``data.pkl``) is a pickle, and the standard loaders run
code from the file (``os.system`` is one ``REDUCE`` away) and import TensorFlow/PyTorch. This package
is its own opcode interpreter:

* :func:`load_inert` turns the stream into an *inert tree*: plain containers and scalars, plus
  :class:`Global` for every global reference, :class:`Reduce` / :class:`Instance` records for every
  call the pickle asks for (with ``BUILD`` state and ``SETITEM``/``APPEND`` items attached), and
  :class:`PersistentRef` (or the caller's ``persistent_load`` result) for persistent ids. Every size,
  count and depth is bounded before anything is allocated.
* :func:`decode` recognises the few shapes we need (numpy arrays, TF eager tensors, torch tensors,
  ``OrderedDict``, paths, dataclass-like records) and builds plain data from them with numpy alone.
  Everything else becomes :class:`Opaque` and :func:`find_opaque` reports it by name.

The only exceptions that leave this package are :class:`~ptycho_bridge.errors.ArchiveError` subclasses.

Layout (each module has one job; this ``__init__`` only re-exports the public names):

* :mod:`.layout` - opcode bytes (from :mod:`pickletools`) and the global names recognised;
* :mod:`.limits` - :class:`PickleLimits` and the hashing guard; :mod:`.reprs` - bounded error text;
* :mod:`.nodes` - the inert tree types; :mod:`.storage` - :class:`TensorStorage` for torch;
* :mod:`.machine` - the interpreter's bounded state; :mod:`.opcodes` - what each opcode does, the loop;
* :mod:`.inert` - :func:`load_inert`, :func:`globals_in`;
* :mod:`.decoder` - the decoder walk, :class:`Record`, :class:`Opaque`; :mod:`.handlers` - the known globals;
* :mod:`.plain` - :func:`decode`, :func:`load`, :func:`find_opaque`.
"""

from ptycho_bridge.io.safepickle.decoder import Opaque, Record
from ptycho_bridge.io.safepickle.inert import globals_in, load_inert
from ptycho_bridge.io.safepickle.layout import TORCH_DTYPES
from ptycho_bridge.io.safepickle.limits import DEFAULT_PICKLE_LIMITS, GiB, PickleLimits
from ptycho_bridge.io.safepickle.nodes import (
    Build,
    Global,
    Instance,
    PersistentRef,
    Reduce,
)
from ptycho_bridge.io.safepickle.plain import decode, find_opaque, load
from ptycho_bridge.io.safepickle.reprs import short_repr
from ptycho_bridge.io.safepickle.storage import TensorStorage

__all__ = [
    "DEFAULT_PICKLE_LIMITS", "TORCH_DTYPES", "Build", "GiB", "Global", "Instance", "Opaque", "PersistentRef",
    "PickleLimits", "Record", "Reduce", "TensorStorage", "decode", "find_opaque", "globals_in", "load",
    "load_inert", "short_repr",
]
