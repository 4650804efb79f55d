"""Parity: one canonical input through several engines (and archives), compared pairwise and to a golden.

Why: a converted archive is only trustworthy if every engine that can run it gives the same object
as the original, and as upstream did (the fixtures' ``golden.npz``). This module holds the input
handling (canonical ``amplitude`` files, upstream goldens of either backend, seeded random input),
the comparison rule and the report; the CLI (``ptycho-bridge parity``) only formats it.

**Comparison rule** (per region — centre ``[N/4, 3N/4)²`` and border, its complement — because
with ``probe.big`` TF's reassembled border is ``obj / 0.001``, three orders of magnitude above the
centre): with ``ref`` the reference output and ``act`` the other one, a region passes when for
*every* element ``|act − ref| <= atol + rtol·|ref|`` (complex modulus), where ``atol`` defaults to
``1e-5 · max|ref|`` over that region (``--atol`` sets an absolute value instead) and ``rtol``
defaults to ``1e-5``. Reported per region: ``max_abs_err``, ``max_rel_err`` (max of
``|act − ref| / |ref|`` over elements with ``|ref| > 1e-6·max|ref|``), ``rms_err``, ``max_ref``,
the ``atol`` used, and ``worst_ratio`` = max of ``|act − ref| / (atol + rtol·|ref|)`` (pass ⇔ ≤ 1).
Non-finite values in ``act`` fail.

**References**: the golden (when the input carries one) is the reference of every comparison with
it; between engines the earlier engine of ``--engines`` is the reference; between two archives the
first archive's output is. Torch goldens are per-patch ``[B, Cout, N, N]``; TF goldens are the
reassembled ``trimmed_obj`` ``[B, N, N, 1]``, so engine outputs are first reassembled with
:func:`ptycho_bridge.spec.reassembly.reassemble` using the input's positions, the whole batch as one call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.errors import ConversionRefused, FormatError, SpecError
from ptycho_bridge.formats.detect import read_archive
from ptycho_bridge.model import BridgeArchive
from ptycho_bridge.ops.engines import (
    GOLDEN,
    EngineUnavailable,
    availability,
    load_engine,
)
from ptycho_bridge.spec.conventions import golden_canonical_input, normalisation_scale
from ptycho_bridge.spec.network import NetworkSpec, resolve_padded_size
from ptycho_bridge.spec.reassembly import (
    centre_border_masks,
    reassemble,
    torch_positions_to_tf,
    trimmed_to_canonical,
)

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL_FACTOR = 1e-5  # × max|ref| of the region when --atol is not given
REL_FLOOR = 1e-6  # max_rel_err ignores elements with |ref| <= REL_FLOOR·max|ref|
REGIONS = ("centre", "border")
PER_PATCH, TRIMMED = "per-patch", "trimmed"


# -- input -----------------------------------------------------------------------------------------
@dataclass
class ParityInput:
    """The canonical input and what came with it."""

    x_norm: np.ndarray  # float32 [B, C, N, N]
    source: str  # file path or "random"
    kind: str  # "canonical" | "golden-tensorflow" | "golden-pytorch" | "random"
    positions_tf: np.ndarray | None = None  # [B, 1, 2, C]
    expected: np.ndarray | None = None  # complex64, per-patch [B, Cout, N, N] or trimmed [B, N, N, 1]
    expected_level: str | None = None  # PER_PATCH | TRIMMED
    seed: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "shape": [int(d) for d in self.x_norm.shape],
            "seed": self.seed,
            "has_positions": self.positions_tf is not None,
            "expected_output": self.expected_level,
        }


def _positions_to_tf(p: np.ndarray, C: int, member: str) -> np.ndarray:
    """TF ``[B, 1, 2, C]`` kept; torch ``[B, C, 1, 2]`` converted; anything else refused."""
    p = np.asarray(p, dtype=np.float32)
    if p.ndim == 4 and p.shape[1:3] == (1, 2) and p.shape[3] == C:
        return np.ascontiguousarray(p)
    if p.ndim == 4 and p.shape[1] == C and p.shape[2:] == (1, 2):
        return torch_positions_to_tf(p)
    raise FormatError(
        f"positions have shape {list(p.shape)}; expected TF [B, 1, 2, {C}] or torch [B, {C}, 1, 2]",
        member=member, field="positions",
    )


def load_input(path: str | Path, archive: BridgeArchive, spec: NetworkSpec) -> ParityInput:
    """Read an input ``.npz``: ``amplitude`` (canonical ``x_norm``) or an upstream ``golden.npz``.

    A golden's backend follows its keys: torch goldens carry ``input_scale_factor``, TF goldens do
    not (their ``input`` is ``X·s`` NHWC, divided by the *archive's* intensity scale when it is a TF
    archive — what that model does — else by the golden's stored ``intensity_scale``).
    """
    member = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read input .npz: {exc}", member=member) from None
    if "amplitude" in data:
        x = np.ascontiguousarray(np.asarray(data["amplitude"], dtype=np.float32))
        kind = "canonical"
    elif "input" in data:
        backend = "pytorch" if "input_scale_factor" in data else "tensorflow"
        scale = None
        if backend == "tensorflow":
            scale = archive.intensity_scale if archive.backend == "tensorflow" else None
            if scale is None and "intensity_scale" not in data:
                raise FormatError("TF golden input needs an intensity_scale (archive or npz key)", member=member)
        x = golden_canonical_input(data, backend, scale)
        kind = f"golden-{backend}"
    else:
        raise FormatError(f"no 'amplitude' or 'input' array (keys: {sorted(data)})", member=member)
    if x.ndim != 4:
        raise FormatError(f"input must be 4-D [B, C, N, N], got {list(x.shape)}", member=member)
    C = x.shape[1]
    pos = _positions_to_tf(data["positions"], C, member) if "positions" in data else None
    if pos is not None and pos.shape[0] != x.shape[0]:
        raise FormatError(f"positions hold {pos.shape[0]} samples, input {x.shape[0]}", member=member)
    inp = ParityInput(x, member, kind, positions_tf=pos)
    if "output" in data:
        out = np.asarray(data["output"]).astype(np.complex64, copy=False)
        B, N = x.shape[0], spec.N
        if out.shape == (B, spec.channels_out, N, N):
            inp.expected, inp.expected_level = out, PER_PATCH
        elif out.shape == (B, N, N, 1):
            inp.expected, inp.expected_level = out, TRIMMED
        else:
            raise FormatError(
                f"output has shape {list(out.shape)}; expected per-patch {[B, spec.channels_out, N, N]} "
                f"or TF trimmed {[B, N, N, 1]}",
                member=member, field="output",
            )
    return inp


def random_input(spec: NetworkSpec, batch: int, seed: int) -> ParityInput:
    """Seeded positive amplitudes normalised as upstream inference does (``mean_b Σx² = (N/2)²``)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    raw = rng.random((batch, spec.channels_in, spec.N, spec.N), dtype=np.float32)
    x = (raw * normalisation_scale(raw)).astype(np.float32)
    return ParityInput(np.ascontiguousarray(x), "random", "random", seed=seed)


def trimmed_object(obj: np.ndarray, positions_tf: np.ndarray | None, spec: NetworkSpec,
                   padded_size: int | None = None, *, centre: bool = True) -> np.ndarray:
    """TF ``trimmed_obj`` ``[B, N, N, 1]`` of per-patch objects (the whole batch as one upstream call).

    ``centre`` is the archive's reassembly semantics (:attr:`ModelEntry.reassembly_centring`)."""
    size = spec.padded_size if padded_size is None else padded_size
    if spec.object_big:
        try:
            size = resolve_padded_size(spec, padded_size, what="reassembly")
        except SpecError as exc:
            raise ConversionRefused(exc.reason, field=exc.field) from None
        if positions_tf is None:
            raise ConversionRefused("reassembly needs positions [B, 1, 2, C]", field="positions")
    return reassemble(obj, positions_tf if positions_tf is not None else np.zeros((len(obj), 1, 2, 1), np.float32),
                      N=spec.N, padded_size=size or spec.N, object_big=spec.object_big, centre=centre)


# -- comparison ------------------------------------------------------------------------------------
def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def compare(actual: np.ndarray, reference: np.ndarray, *, rtol: float = DEFAULT_RTOL,
            atol: float | None = None, regions: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per-region errors of ``actual`` vs ``reference`` (both ``[B, C, N, N]``) and the verdict.

    ``regions`` (name → boolean mask over the last two axes) replaces the centre/border split, e.g.
    one ``"object"`` region for a stitched object, which has no ×1000 border.
    """
    a = np.asarray(actual)
    e = np.asarray(reference)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {list(a.shape)} vs reference {list(e.shape)}")
    if regions is None:
        centre, border = centre_border_masks(e.shape[-1])
        regions = {"centre": centre, "border": border}
    diff = np.abs(a.astype(np.complex128) - e.astype(np.complex128))
    mag = np.abs(e.astype(np.complex128))
    found: dict[str, Any] = {}
    for name, mask in regions.items():
        d, m = diff[..., mask], mag[..., mask]
        max_ref = float(m.max()) if m.size else 0.0
        tol_abs = DEFAULT_ATOL_FACTOR * max_ref if atol is None else float(atol)
        allowed = tol_abs + rtol * m
        finite = bool(np.isfinite(d).all())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(allowed > 0, d / np.where(allowed > 0, allowed, 1.0), np.where(d > 0, np.inf, 0.0))
        sig = m > REL_FLOOR * max_ref
        found[name] = {
            "max_abs_err": _finite(float(d.max())) if d.size else 0.0,
            "max_rel_err": _finite(float((d[sig] / m[sig]).max())) if sig.any() else 0.0,
            "rms_err": _finite(float(np.sqrt(np.mean(d**2)))) if d.size else 0.0,
            "max_ref": max_ref,
            "atol": tol_abs,
            "rtol": float(rtol),
            "worst_ratio": _finite(float(ratio.max())) if ratio.size else 0.0,
            "ok": bool(finite and (ratio.size == 0 or float(ratio.max()) <= 1.0)),
        }
    return {"ok": all(r["ok"] for r in found.values()), "regions": found}


# -- the report --------------------------------------------------------------------------------------
@dataclass
class ArchiveUnderTest:
    label: str  # "A", "B" (or "" with a single archive)
    path: str
    archive: BridgeArchive
    spec: NetworkSpec
    tensors: Mapping[str, np.ndarray]
    sha256: str | None = None
    reassembly_centring: bool = True  # the model's ModelEntry.reassembly_centring


@dataclass
class _Run:
    label: str
    archive: ArchiveUnderTest
    engine: str
    output: np.ndarray
    seconds: float
    trimmed: np.ndarray | None = field(default=None)


def _pairs(runs: Sequence[_Run]) -> Iterable[tuple[_Run, _Run]]:
    """Within one archive every engine pair (earlier = reference); across archives the same engine."""
    for i, ref in enumerate(runs):
        for act in runs[i + 1 :]:
            if ref.archive is act.archive or ref.engine == act.engine:
                yield ref, act


def parity_report(
    archives: Sequence[ArchiveUnderTest],
    engines: Sequence[str],
    inp: ParityInput,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float | None = None,
    batch_size: int | None = None,
    strict: bool = False,
    progress: Callable[[list[tuple[str, str]]], Iterable[tuple[str, str]]] | None = None,
    keep: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Run ``inp`` through every requested, installed engine for every archive; compare; report.

    ``strict`` (the engines were named by the user): an engine that cannot run — not installed, or
    unable to express the network — fails the report (``ok`` false, a note per engine) instead of
    being skipped; it is still listed under ``engines.skipped`` with its reason.

    ``progress`` wraps the list of ``(archive label, engine)`` jobs (the CLI's progress bar);
    ``keep``, when given, receives ``(actual, reference)`` of comparison ``i`` under key ``i`` (the
    arrays the rule compared, for ``--plot``).
    """
    base = archives[0].spec
    for a in archives[1:]:
        if (a.spec.channels_in, a.spec.N, a.spec.channels_out) != (base.channels_in, base.N, base.channels_out):
            raise ConversionRefused(
                f"archive {a.label} takes/returns [B, {a.spec.channels_in}→{a.spec.channels_out}, {a.spec.N}, {a.spec.N}] "
                f"but archive {archives[0].label} [B, {base.channels_in}→{base.channels_out}, {base.N}, {base.N}]: "
                "their outputs cannot be compared", field="network",
            )
    skipped: list[dict[str, str]] = []
    runs: list[_Run] = []
    jobs = [(a.label, name) for a in archives for name in engines]
    by_label = {a.label: a for a in archives}
    for a_label, name in (progress(jobs) if progress else jobs):
        a = by_label[a_label]
        label = f"{a.label}:{name}" if a.label else name
        reason = availability(name)
        if reason is None:
            t0 = time.perf_counter()
            try:
                out = load_engine(name, a.spec, a.tensors).run(inp.x_norm, batch_size=batch_size)
            except EngineUnavailable as exc:
                reason = exc.reason
            else:
                runs.append(_Run(label, a, name, out, time.perf_counter() - t0))
                continue
        skipped.append({"engine": name, "archive": a.label or a.path, "reason": reason})

    comparisons: list[dict[str, Any]] = []
    notes: list[str] = []
    if inp.expected is not None:
        for run in runs:
            actual = run.output
            reference = inp.expected
            if inp.expected_level == TRIMMED:
                try:
                    actual = trimmed_to_canonical(trimmed_object(run.output, inp.positions_tf, run.archive.spec,
                                                                 centre=run.archive.reassembly_centring))
                except (ConversionRefused, ValueError) as exc:
                    notes.append(f"{GOLDEN} vs {run.label} not compared: {exc}")
                    continue
                reference = trimmed_to_canonical(inp.expected)
            comparisons.append({"reference": GOLDEN, "actual": run.label, "level": inp.expected_level,
                                **compare(actual, reference, rtol=rtol, atol=atol)})
            if keep is not None:
                keep[len(comparisons) - 1] = (actual, reference)
    for ref, act in _pairs(runs):
        if keep is not None:
            keep[len(comparisons)] = (act.output, ref.output)
        comparisons.append({"reference": ref.label, "actual": act.label, "level": PER_PATCH,
                            **compare(act.output, ref.output, rtol=rtol, atol=atol)})
    for a in archives:
        if inp.expected_level == TRIMMED and not a.reassembly_centring:
            notes.append(f"{a.label or a.path}: {a.archive.era} reassembly translates each patch by its own offset "
                         "(no batch-mean centring), as that era's upstream did")
    failed_engines = bool(strict and skipped)
    for s in skipped if strict else ():
        notes.append(f"requested engine {s['engine']} cannot run on {s['archive']}: {s['reason']}")
    if not comparisons:
        notes.append("nothing to compare: fewer than two outputs (install more engines or pass a golden input)")
    return {
        "ok": bool(comparisons) and all(c["ok"] for c in comparisons) and not failed_engines,
        "archives": [
            {"label": a.label, "path": a.path, "era": a.archive.era, "backend": a.archive.backend, "sha256": a.sha256,
             "network": a.spec.to_dict()}
            for a in archives
        ],
        "input": inp.describe(),
        "tolerance": {
            "rtol": float(rtol),
            "atol": None if atol is None else float(atol),
            "rule": "per region and element: |act - ref| <= atol + rtol*|ref|; atol defaults to "
                    f"{DEFAULT_ATOL_FACTOR:g}*max|ref| of the region",
        },
        "engines": {
            "requested": list(engines),
            "ran": [{"label": r.label, "engine": r.engine, "archive": r.archive.label, "seconds": r.seconds} for r in runs],
            "skipped": skipped,
        },
        "comparisons": comparisons,
        "notes": notes,
    }


__all__ = [
    "ArchiveUnderTest",
    "archive_under_test",
    "file_sha256",
    "ParityInput",
    "compare",
    "load_input",
    "parity_report",
    "random_input",
    "trimmed_object",
]


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes (``None`` for a folder archive): records which archive was used."""
    import hashlib

    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def archive_under_test(path: str | Path, *, label: str = "", model: str = "diffraction_to_obj",
                       verify: bool = True) -> ArchiveUnderTest:
    """Read an archive and pick the model every engine runs (its spec and canonical tensors, checked
    against the archive's sha256 index unless ``verify`` is false)."""

    arch = read_archive(path, verify=verify)
    if model not in arch.models:
        raise FormatError(f"no model {model!r} (models: {sorted(arch.models)})", member=str(path))
    entry = arch.models[model]
    if entry.spec is None:
        raise FormatError(f"model {model!r} has no network spec; it cannot be run", member=str(path))
    return ArchiveUnderTest(label, str(path), arch, entry.spec, entry.tensors, file_sha256(path),
                            reassembly_centring=entry.reassembly_centring)
