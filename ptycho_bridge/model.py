"""The neutral in-memory archive: :class:`BridgeArchive` and its :class:`ModelEntry` records.

Why: every era reader produces this one shape, and every writer, engine and CLI command consumes
it, so no code downstream needs to know which era an archive came from. Tensors are canonical
(names from :mod:`ptycho_bridge.spec.mapping`, conv weights OIHW) and may be loaded lazily: ``inspect``
only needs their shapes, dtypes and byte counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.io.deferred import DeferredArray, is_array, itemsize
from ptycho_bridge.spec.network import NetworkSpec


def primary_name(names: Sequence[str]) -> str:
    """The primary (inference) model among ``names``: ``diffraction_to_obj`` when present, else the first."""
    return "diffraction_to_obj" if "diffraction_to_obj" in names else names[0]


@dataclass(frozen=True)
class TensorInfo:
    """Shape, dtype and (where known) the backend name and checksum of one canonical tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    source_name: str | None = None
    sha256: str | None = None

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= int(d)
        return count * itemsize(self.dtype)


class LazyTensors(Mapping[str, "np.ndarray"]):
    """A mapping of canonical tensors whose data is read on first access (then cached)."""

    def __init__(self, infos: Mapping[str, TensorInfo], loader: Callable[[], dict[str, np.ndarray]]) -> None:
        self.infos = dict(infos)
        self._loader = loader
        self._data: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._data is None:
            self._data = self._loader()
        return self._data

    @property
    def loaded(self) -> bool:
        return self._data is not None

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.infos:
            raise KeyError(key)
        return self._load()[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)


@dataclass
class ModelEntry:
    """One model of an archive (``diffraction_to_obj``, ``autoencoder``)."""

    name: str
    spec: NetworkSpec | None
    tensors: Mapping[str, np.ndarray]
    tensor_info: dict[str, TensorInfo]
    payload: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sentinel: bool = False
    # Whether this model's TF reassembly stage centres the offsets on their batch mean before
    # translating (upstream since the .keras layout; the SavedModel era did not: False there).
    # Per-patch outputs do not depend on it; only the reassembled ``trimmed_obj`` does.
    reassembly_centring: bool = True

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensor_info.values())

    # the field names ``inspect --json`` uses, so that code reads like the JSON it was written from
    @property
    def network(self) -> NetworkSpec | None:
        """The network spec (``inspect --json``: ``models.<name>.network``); None for a sentinel."""
        return self.spec

    @property
    def n_tensors(self) -> int:
        return len(self.tensor_info)

    @property
    def tensor_bytes(self) -> int:
        return self.nbytes


@dataclass
class BridgeArchive:
    """The neutral view of any archive era."""

    path: str
    era: str
    backend: str
    params: dict[str, Any]
    models: dict[str, ModelEntry]
    intensity_scale: float | None
    manifest: dict[str, Any] = field(default_factory=dict)
    torch_config: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    has_checksums: bool = False
    # facts worth knowing that need no action (warnings are for what the user should do something about)
    notes: list[str] = field(default_factory=list)
    members: dict[str, int] = field(default_factory=dict)

    @property
    def primary(self) -> ModelEntry:
        """The inference model (``diffraction_to_obj``), the one every engine runs."""
        if "diffraction_to_obj" in self.models:
            return self.models["diffraction_to_obj"]
        raise KeyError("archive has no diffraction_to_obj model")

    @property
    def network(self) -> NetworkSpec | None:
        """The inference model's spec (``inspect --json``: top-level ``network``), or None."""
        entry = self.models.get("diffraction_to_obj") or next((m for m in self.models.values() if m.spec), None)
        return entry.spec if entry is not None else None

    @property
    def format_version(self) -> str | None:
        """bridge-2's ``format_version`` (None for legacy eras), as ``inspect --json`` reports it."""
        return self.manifest.get("format_version") if self.era == "bridge-2" else None

    @property
    def source_era(self) -> str | None:
        """The era a bridge-2 archive was converted, migrated or saved from (None for legacy eras)."""
        return self.manifest.get("source_era") if self.era == "bridge-2" else None

    @property
    def probe(self) -> np.ndarray | DeferredArray | None:
        """The probe array from ``params``; a :class:`DeferredArray` only when the archive was read
        with ``lazy_arrays`` (``inspect``), which never builds it."""
        probe = self.params.get("probe")
        return probe if is_array(probe) else None
