"""Migrate a legacy archive to ``bridge-2`` of the same backend, losing nothing.

Why: legacy archives carry no checksums, no versioned metadata and only pickled parameters. A
migration adds the neutral members (``manifest.json``, ``params.json``, ``<model>/weights.h5``)
and keeps every legacy member **byte-for-byte** (copied from the source zip, never re-serialised),
so PtychoPINN's and Ptychodus' loaders still open the result. The one exception is a Lightning
``.ckpt``: it is not an archive, so there are no legacy members to keep (a torch bundle is written
written by ``converters.pytorch.write``). The other is the SavedModel era (``tf-savedmodel-1``): today's
upstream opens it only through TensorFlow's SavedModel loader, so its legacy members are *upgraded*
to the current ``.keras`` layout (``converters.tensorflow.write``), which today's PtychoPINN opens
natively; the canonical tensors are the same bits. One behaviour differs and the notes say so: the
SavedModel era's reassembly translated each patch by its own offset, today's re-centres the offsets
on their batch mean (per-patch output unchanged; a batch's reassembled output may shift slightly).

Everything is built and validated in memory first (:func:`plan_migration`); ``--dry-run`` prints
that plan, a real run writes it atomically and then re-reads the output to prove it is equivalent
to the source (:func:`ptycho_bridge.ops.diff.diff_archives`) and valid (``validate``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.pytorch.write import torch_legacy_members
from converters.tensorflow.strip import keras_without_optimizer
from converters.tensorflow.write import SUPPORTED_MODELS as TF_WRITABLE_MODELS
from converters.tensorflow.write import tf_legacy_members
from ptycho_bridge.errors import FormatError, OutputExistsError, UnsupportedError
from ptycho_bridge.formats.bridge2.write import (
    ModelToWrite,
    build_members,
    write_members,
)
from ptycho_bridge.formats.detect import open_container, read_archive
from ptycho_bridge.io.atomic import refuse_existing
from ptycho_bridge.model import BridgeArchive, primary_name
from ptycho_bridge.ops.diff import diff_archives
from ptycho_bridge.ops.report import finite_problems, validate_path
from ptycho_bridge.spec.history import shares_amp_head, today_form

LEGACY_ERAS = ("tf-modelmanager-1", "tf-savedmodel-1", "torch-bundle-2", "torch-json-1", "lightning-ckpt")
# eras whose legacy members are rewritten in the current upstream layout instead of kept byte-for-byte
UPGRADED_ERAS = ("tf-savedmodel-1",)
# a legacy member whose name a bridge-2 archive needs for itself is kept under another name
RENAMED = {"manifest.json": "torch_manifest.json"}


@dataclass
class MigrationPlan:
    """Everything a migration would write, validated but not yet on disk."""

    source: str
    source_era: str
    backend: str
    output: Path
    manifest: dict[str, Any]
    members: dict[str, bytes]
    legacy: list[str]
    notes: list[str] = field(default_factory=list)
    archive: BridgeArchive | None = field(default=None, repr=False)  # the source as read (for verification)

    def member_table(self) -> list[dict[str, Any]]:
        """What the archive will hold: manifest.json first, then members in write order."""
        import json

        rows = [{"name": "manifest.json", "size": len(json.dumps(self.manifest, indent=1).encode("utf-8")),
                 "role": "neutral"}]
        for name, data in self.members.items():
            rows.append({"name": name, "size": len(data), "role": "legacy" if name in self.legacy else "neutral"})
        return rows


def _legacy_members(source: str | os.PathLike[str], names: list[str]) -> dict[str, bytes]:
    """The source's members, byte-for-byte, read through the bounded container (nothing extracted)."""

    zf = open_container(source)
    try:
        return {RENAMED.get(name, name): zf.read(name) for name in names}
    finally:
        zf.close()


def _drop_optimizer_state(arch: BridgeArchive, legacy: dict[str, bytes], label: str) -> dict[str, int]:
    """Rewrite, in ``legacy``, every kept ``model.keras`` that holds optimizer state; returns member -> tensors dropped."""
    stripped: dict[str, int] = {}
    for entry in arch.models.values():
        opt, member = entry.payload.get("optimizer_tensors"), entry.payload.get("member")
        if opt and isinstance(member, str) and member in legacy:
            legacy[member] = keras_without_optimizer(legacy[member], member=f"{label}:{member}")
            stripped[member] = int(opt)
    return stripped


def _ckpt_legacy_members(arch: BridgeArchive, notes: list[str]) -> dict[str, bytes]:
    """A torch bundle for a Lightning source when the torch writer exists and can be fed; else say why not."""
    if arch.intensity_scale is None:
        notes.append("the checkpoint records no intensity_scale, which upstream's params.dill needs: no torch bundle "
                     "members written, so upstream's torch bundle loaders cannot open the output; the canonical "
                     "tensors and configs are complete. To get an archive upstream's load_inference_bundle_torch "
                     "opens, run `ptycho-bridge pack CHECKPOINT -o OUT.zip --intensity-scale X` (or --params "
                     "params.dill) with the training intensity scale")
        return {}
    entry = arch.primary
    assert entry.spec is not None
    config = {k: v for k, v in (arch.torch_config or {}).items() if k != "hyper_parameters"} or None
    spec, tensors, widened = today_form(entry.spec, dict(entry.tensors))
    notes += [f"{n}: upstream's torch bundle loaders build that form" for n in widened]
    members = torch_legacy_members(spec, tensors, arch.params, torch_config=config,
                                   intensity_scale=arch.intensity_scale, models=("diffraction_to_obj",))
    notes.append(f"torch bundle members written by converters.pytorch.write: {', '.join(sorted(members))}")
    return dict(members)


def needs_upgrade(arch: BridgeArchive) -> bool:
    """Whether the legacy members must be rewritten in today's ``.keras`` layout for today's upstream to open them.

    The SavedModel era always (today's upstream has no SavedModel loader); a ``.keras`` archive whose network
    is not the one today's factory builds (a one-channel amplitude head, upstream before c03673d) too, since
    upstream's loader rebuilds today's network and loads weights by shape. Not when the network cannot be
    re-expressed for today's factory (the legacy ``A + iφ`` combine): see :func:`_unloadable_note`.
    """
    if arch.era in UPGRADED_ERAS:
        return True
    spec = arch.primary.spec if arch.backend == "tensorflow" and arch.era == "tf-modelmanager-1" else None
    return spec is not None and spec.use_polar and shares_amp_head(spec)


def _unloadable_note(arch: BridgeArchive) -> list[str]:
    """Why today's upstream cannot open a kept ``.keras`` network, if it cannot (ptycho_bridge.spec.history)."""
    spec = arch.primary.spec if arch.backend == "tensorflow" else None
    if spec is None or spec.use_polar:
        return []
    return ["the network combines its heads as amp + i·phase (upstream's .keras CombineComplexLayer before "
            "2026-01-26); today's upstream factory always builds amp·exp(i·phase), which no choice of weights turns "
            "into this one, so the legacy members are kept byte-for-byte for the upstream of the archive's own era; "
            "the canonical tensors and network spec carry it exactly (run it with ptycho-bridge run/reconstruct)"]


def _upgraded_tf_members(arch: BridgeArchive, notes: list[str]) -> dict[str, bytes]:
    """The current upstream ``.keras``-layout members for a source today's upstream cannot open as it is."""
    entry = arch.primary
    assert entry.spec is not None and arch.intensity_scale is not None
    spec, tensors, widened = today_form(entry.spec, dict(entry.tensors))
    notes += widened
    members = tf_legacy_members(spec, tensors, arch.params, arch.intensity_scale)
    dropped = sorted(set(arch.models) - set(TF_WRITABLE_MODELS))
    notes.append(f"{arch.era} legacy members upgraded to the current upstream .keras layout by "
                 f"converters.tensorflow.write ({', '.join(sorted(members))}): today's PtychoPINN opens them "
                 "natively, without TensorFlow's SavedModel loader; the source's SavedModel directories are not kept")
    if dropped:
        notes.append(f"model(s) {dropped} kept as canonical tensors only (weights.h5); upstream's .keras members are "
                     "written for diffraction_to_obj (the inference model); training state (optimizer, metrics) dropped")
    if not entry.reassembly_centring:
        notes.append("reassembly: today's upstream re-centres the offsets on their batch mean before translating, "
                     f"{arch.era}'s did not; the per-patch output is unchanged, a batch's reassembled output may "
                     "shift slightly")
    return members


def plan_migration(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                   read_verify: bool = True, drop_optimizer: bool = False) -> MigrationPlan:
    """Read ``source`` (any legacy era) and build the bridge-2 archive that would replace it.

    ``drop_optimizer`` leaves the optimizer state out of kept ``model.keras`` members (training only;
    every layer weight and the config stay byte-for-byte, see :mod:`converters.tensorflow.strip`)."""

    arch = read_archive(source, verify=read_verify)
    label = Path(source).name
    if arch.era not in LEGACY_ERAS:
        raise UnsupportedError(f"already a {arch.era} archive; nothing to migrate", member=label)
    problems = finite_problems(arch)
    if problems:
        raise FormatError(f"refusing to migrate non-finite weights: {problems[0]}"
                          + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""), member=label)
    notes: list[str] = [f"migrated from {arch.era} ({label}) by ptycho-bridge migrate"]
    bundle = arch.era != "lightning-ckpt"
    upgrade = needs_upgrade(arch)
    notes += _unloadable_note(arch)
    if upgrade:
        legacy = _upgraded_tf_members(arch, notes)
    elif bundle:
        source_names = sorted(arch.members)
        legacy = _legacy_members(source, source_names)
        stripped = _drop_optimizer_state(arch, legacy, label) if drop_optimizer else {}
        kept = sorted(set(legacy) - set(stripped))
        notes.append(f"{len(kept)} legacy members kept byte-for-byte: {', '.join(kept)}")
        notes += [f"{m}: optimizer state dropped ({n} tensors, --drop-optimizer); its layer weights, config.json and "
                  "metadata.json kept byte-for-byte; inference never reads it (Keras starts a fresh optimizer)"
                  for m, n in stripped.items()]
        for old, new in RENAMED.items():
            if old in source_names:
                notes.append(f"legacy {old} kept as {new} (bridge-2 owns {old})")
    else:
        opt = arch.primary.payload.get("optimizer_states") or 0
        notes.append(f"Lightning checkpoint: optimizer state ({opt} optimizer(s)), loops and callbacks dropped; "
                     "state_dict kept as canonical tensors, hyper_parameters kept in params.json torch_config")
        legacy = _ckpt_legacy_members(arch, notes)
    notes += [f"source reader warning: {w}" for w in arch.warnings]
    for name, entry in arch.models.items():
        opt, member = entry.payload.get("optimizer_tensors"), entry.payload.get("member")
        if opt and not (drop_optimizer and member in legacy):
            notes.append(f"{member} kept as-is, including its optimizer state ({opt} tensors; training only: "
                         "`migrate --drop-optimizer` leaves it out)")

    models: dict[str, ModelToWrite] = {}
    for name, entry in arch.models.items():
        member, source_kind = entry.payload.get("member"), entry.payload.get("kind", "none")
        if upgrade:  # members written by the TF writer above (diffraction_to_obj only)
            member, source_kind = f"{name}/model.keras", "keras"
        if not bundle and f"{name}/model.pth" in legacy:
            member = f"{name}/model.pth"  # written for a Lightning source by the torch bundle writer
        kept = isinstance(member, str) and member in legacy
        if entry.sentinel:
            sentinel = entry.payload.get("sentinel")
            if not isinstance(sentinel, str) or not kept:
                raise FormatError(f"sentinel placeholder {sentinel!r:.60} cannot be recorded", member=f"{label}:{member}")
            models[name] = ModelToWrite(None, {}, "torch-sentinel", member,
                                        notes=[f"placeholder {{'_sentinel': {sentinel!r}}} saved by upstream instead of weights"],
                                        sentinel=sentinel)
            continue
        assert entry.spec is not None  # readers give every non-sentinel model a spec
        kind = str(source_kind) if kept else "none"
        models[name] = ModelToWrite(entry.spec, dict(entry.tensors), kind, member if kept else None,
                                    notes=[f"source reader warning: {w}" for w in entry.warnings],
                                    reassembly_centring=entry.reassembly_centring)
    real = [n for n, m in models.items() if m.spec is not None]
    primary = primary_name(real)
    models[primary].notes = notes + models[primary].notes

    manifest, members = build_members(
        backend=arch.backend,
        source_era=arch.era,
        models=models,
        params=arch.params,
        intensity_scale=arch.intensity_scale,
        torch_config=arch.torch_config,
        legacy_members=legacy,
    )
    return MigrationPlan(str(source), arch.era, arch.backend, Path(output), manifest, members, sorted(legacy), notes,
                         archive=arch)


def migrate(
    source: str | os.PathLike[str], output: str | os.PathLike[str], *, force: bool = False, dry_run: bool = False,
    verify: bool = True, read_verify: bool = True, drop_optimizer: bool = False,
) -> tuple[MigrationPlan, dict[str, Any] | None]:
    """Plan, then (unless ``dry_run``) write, verify and only then rename into place; returns the plan
    and the check summary. With ``verify`` the written file must pass ``validate`` and be bit-identical
    to the source *before* the atomic rename: a failing output is removed, never left behind."""
    target = Path(output)
    refuse_existing(target, force=force)
    if target.exists() and target.resolve() == Path(source).resolve():
        raise OutputExistsError(f"{target} is the source archive: migrate to a new path, check it, then replace the "
                                "source yourself (an unverified in-place migration could lose the only copy)")
    plan = plan_migration(source, target, read_verify=read_verify, drop_optimizer=drop_optimizer)
    if dry_run:
        return plan, None
    summary: dict[str, Any] = {}

    def check(tmp: Path) -> None:
        summary.update(verify_migration(plan, tmp, label=str(target)))

    write_members(target, plan.manifest, plan.members, force=force, check=check if verify else None)
    return plan, (summary if verify else None)


def verify_migration(plan: MigrationPlan, output: str | os.PathLike[str], *, label: str | None = None) -> dict[str, Any]:
    """Re-read the written archive: it must validate and be equivalent (bit-identical) to the source.
    ``label`` names the final output when ``output`` is still the temporary file."""

    label = label or str(output)
    result = validate_path(output)
    if not result["valid"]:
        raise FormatError(f"migrated archive fails validation: {result['errors'][0]}", member=label)
    source = plan.archive if plan.archive is not None else read_archive(plan.source)
    report = diff_archives(source, read_archive(output), atol=0.0)
    if not report["equivalent"]:
        raise FormatError(f"migrated archive differs from its source in {report['differences']} place(s); "
                          f"run `ptycho-bridge diff {plan.source} <output>`", member=label)
    compared = sum(m["compared"] for m in report["models"])
    return {"valid": True, "equivalent": True, "tensors_compared": compared,
            "checksums": next((c["detail"] for c in result["checks"] if c["check"] == "checksums"), "")}
