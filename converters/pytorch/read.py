"""Readers for the PyTorch eras: ``torch-bundle-2`` (``save_torch_bundle``), ``torch-json-1`` (newer
upstream, root ``manifest.json``) and a bare Lightning ``.ckpt``.

All three hold a torch ``state_dict`` (decoded by :mod:`converters.pytorch.torchzip`, never ``torch.load``)
and, optionally, the torch configs (``torch_scaling_metadata.pt`` or Lightning ``hyper_parameters``)
that decide CBAM, batch-norm and the c_outer override — which ``params.dill`` does not carry.
Member names, versions and key orders: :mod:`converters.pytorch.layout` (shared with the writer).
"""

from __future__ import annotations

from typing import Any, Mapping

from converters.pytorch import (
    torchzip,  # the module, not its names: see LightningCheckpointReader
)
from converters.pytorch.layout import (
    JSON_BACKEND,
    JSON_MANIFEST_MEMBER,
    JSON_MANIFEST_VERSION,
    JSON_PARAMS_MEMBER,
    METADATA_MEMBER,
    SENTINEL_KEY,
    TORCH_CONFIG_KEYS,
    TORCH_CONFIG_READ_ORDER,
    TORCH_VERSION,
    TORCHAPI_CONFIG_KEYS,
    VARIANT_TORCHAPI,
)
from converters.pytorch.spec import spec_from_torch
from converters.pytorch.torchapi import (
    check_checkpoint_tensors,
    lightning_version_warning,
    looks_torchapi,
    spec_from_hyper_parameters,
)
from converters.pytorch.torchzip import read_torch
from ptycho_bridge.errors import FormatError, SpecError, UnsupportedError
from ptycho_bridge.formats.base import (
    MAX_GRIDSIZE,
    EraReader,
    cached_json,
    opaque_names,
    read_json,
    read_pickle,
    require_dict,
    require_field,
    require_float,
    require_int,
    require_model_names,
    require_str,
    type_name,
)
from ptycho_bridge.formats.legacy import (
    check_legacy_manifest,
    has_legacy_version,
    legacy_manifest_warnings,
    read_legacy_manifest,
)
from ptycho_bridge.io.deferred import is_array, materialise_tree
from ptycho_bridge.io.safezip import SafeZip
from ptycho_bridge.model import BridgeArchive, LazyTensors, ModelEntry, TensorInfo, primary_name
from ptycho_bridge.spec.mapping import torch_to_canonical


def canonical_state_dict(state: Any, *, member: str) -> tuple[LazyTensors, dict[str, TensorInfo]]:
    """state_dict → canonical tensors + infos; every value must be a decoded array (an ndarray, or a
    :class:`DeferredArray` from a deferred decode: then the tensors are built when first used)."""
    state = require_dict(state, member=member, what="state_dict")
    values: dict[str, Any] = {}
    infos: dict[str, TensorInfo] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise FormatError(f"state_dict key {key!r} is not a string", member=member)
        if not is_array(value):
            raise FormatError(f"state_dict entry {key!r} is not a tensor ({type_name(value)})", member=member, field=key)
        name = torch_to_canonical(key)
        if name in values:
            raise FormatError(f"state_dict keys map twice onto canonical tensor {name!r}", member=member, field=key)
        values[name] = value
        infos[name] = TensorInfo(name, tuple(int(d) for d in value.shape), str(value.dtype), source_name=key)
    return LazyTensors(infos, lambda: {name: materialise_tree(v) for name, v in values.items()}), infos


def torch_model_entry(
    name: str,
    state: Any,
    *,
    member: str,
    N: int,
    gridsize: int,
    params: Mapping[str, Any],
    model_config: Mapping[str, Any] | None,
) -> ModelEntry:
    """A state_dict plus what is known of its configuration → a checked :class:`ModelEntry`."""
    if isinstance(state, dict) and set(state) == {SENTINEL_KEY}:
        if not isinstance(state[SENTINEL_KEY], str):
            raise FormatError(f"sentinel placeholder holds {type_name(state[SENTINEL_KEY])}, expected a model name; "
                              "it was not executed", member=member, field=SENTINEL_KEY)
        return ModelEntry(
            name, None, {}, {}, payload={"kind": "torch-sentinel", "sentinel": state[SENTINEL_KEY]},
            warnings=[f"{name} holds the sentinel {state!r}, not weights (upstream writes a placeholder)"],
            sentinel=True,
        )
    tensors, infos = canonical_state_dict(state, member=member)
    spec, warnings = spec_from_torch(
        N=N,
        gridsize=gridsize,
        params=params,
        model_config=model_config,
        shapes={k: v.shape for k, v in infos.items()},
        member=member,
    )
    return ModelEntry(name, spec, tensors, infos, payload={"kind": "torch-state-dict"}, warnings=warnings)


def torch_config_from(metadata: Any, *, member: str) -> dict[str, Any]:
    """The four torch config dicts from ``torch_scaling_metadata.pt`` or Lightning hyper_parameters."""
    metadata = require_dict(metadata, member=member, what="torch metadata")
    config = {}
    for key in TORCH_CONFIG_READ_ORDER:
        if key in metadata and metadata[key] is not None:
            config[key] = require_dict(metadata[key], member=member, what=key)
    if "model_config" not in config:
        raise FormatError("torch metadata has no model_config", member=member, field="model_config")
    return config


def plain_loader_notes(params: Mapping[str, Any], model_config: Mapping[str, Any] | None) -> list[str]:
    """Upstream's ``load_torch_bundle`` rebuilds from params.dill; say when that gives another network.

    A note, not a warning: every upstream torch bundle has this mismatch, ptycho-bridge reads the
    model_config (as ``load_inference_bundle_torch`` does), and the only action concerns upstream code."""
    if model_config is None:
        return []
    out = []
    tf_flag = params.get("intensity_scale.trainable")
    torch_flag = model_config.get("intensity_scale_trainable")
    if isinstance(tf_flag, bool) and isinstance(torch_flag, bool) and tf_flag != torch_flag:
        out.append(
            f"params.dill says intensity_scale.trainable={tf_flag}, the torch model_config "
            f"intensity_scale_trainable={torch_flag}; ptycho-bridge follows the model_config, as upstream's "
            "load_inference_bundle_torch does. In upstream code, load this bundle with load_inference_bundle_torch: "
            "the plain load_torch_bundle would scale the input by exp(log_scale) instead of input_scale_factor"
        )
    return out


def _grid_and_n(params: Mapping[str, Any], config: Mapping[str, Any] | None, member: str) -> tuple[int, int]:
    data = (config or {}).get("data_config", {}) if config else {}
    if "N" in params:
        N = require_field(dict(params), "N", int, member=member)
    else:
        N = require_field(dict(data), "N", int, member=member)
    if "gridsize" in params:
        g = require_int(require_field(dict(params), "gridsize", int, member=member), member=member, field="gridsize",
                        min=1, max=MAX_GRIDSIZE)
    else:
        grid = data.get("grid_size")
        if not (isinstance(grid, (list, tuple)) and len(grid) == 2 and grid[0] == grid[1] and isinstance(grid[0], int)):
            raise FormatError(f"no gridsize (data_config.grid_size={grid!r})", member=member, field="gridsize")
        g = int(grid[0])
    if data:
        if data.get("N", N) != N:
            raise SpecError(f"params N={N} but torch data_config N={data.get('N')}", member=member, field="N")
        if "C" in data and data["C"] != g * g:
            raise SpecError(f"gridsize={g} means C={g * g} but the torch data_config says C={data['C']}",
                            member=member, field="gridsize")
    return N, g


class TorchBundleReader(EraReader):
    era = "torch-bundle-2"
    legacy_manifest_version = TORCH_VERSION
    backend = "pytorch"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        return has_legacy_version(zf, hints, TORCH_VERSION)

    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        manifest = read_legacy_manifest(zf, {} if hints is None else hints)
        names = check_legacy_manifest(manifest, zf, TORCH_VERSION)
        arch = _read_torch_models(zf, path, names, self.era, _read_metadata(zf), params_member="params.dill",
                                  manifest={"models": names, "version": TORCH_VERSION})
        arch.warnings[:0] = legacy_manifest_warnings(manifest)
        return arch


def _read_metadata(zf: SafeZip) -> Any:
    """``torch_scaling_metadata.pt`` decoded (once per read), or None when the bundle has none."""
    return read_torch(zf, METADATA_MEMBER) if METADATA_MEMBER in zf else None


def _read_torch_models(
    zf: SafeZip, path: str, names: list[str], era: str, metadata: Any, *, params_member: str, manifest: dict[str, Any]
) -> BridgeArchive:
    """The models of a torch bundle; ``metadata`` is :func:`_read_metadata` of ``zf``."""
    warnings: list[str] = []
    config = None
    if METADATA_MEMBER in zf:
        config = torch_config_from(metadata, member=zf.member_label(METADATA_MEMBER))
    else:
        warnings.append(f"no {METADATA_MEMBER}: CBAM/batch-norm inferred from state_dict keys (upstream needs it for strict loads)")
    model_config = config.get("model_config") if config else None
    models: dict[str, ModelEntry] = {}
    params_by_model: dict[str, dict[str, Any]] = {}
    for name in names:
        pm = f"{name}/{params_member}"
        if pm not in zf:
            raise FormatError(f"model {name!r} has no {params_member}", member=zf.member_label(pm))
        reader = read_json if params_member.endswith(".json") else read_pickle
        params = require_dict(reader(zf, pm), member=zf.member_label(pm), what=params_member)
        if "_version" in params:
            require_str(params["_version"], member=zf.member_label(pm), field="_version")
        opaque = opaque_names(params)
        if opaque:
            warnings.append(f"{pm} holds values of unknown type {opaque} (kept inert, never executed)")
        params_by_model[name] = params
        N, g = _grid_and_n(params, config, zf.member_label(pm))
        weights = f"{name}/model.pth"
        if weights not in zf:
            if era == "torch-json-1":
                raise UnsupportedError(
                    f"model {name!r} has no model.pth: metadata-only torch-json-1 bundles carry no weights to read",
                    member=zf.member_label(weights),
                )
            raise FormatError(f"model {name!r} has no model.pth", member=zf.member_label(weights))
        state = read_torch(zf, weights, defer_arrays=True)  # tensors built when first used
        models[name] = torch_model_entry(
            name, state, member=zf.member_label(weights), N=N, gridsize=g, params=params, model_config=model_config
        )
        models[name].payload["member"] = weights
    primary = primary_name(names)
    params = params_by_model[primary]
    notes = plain_loader_notes(params, model_config)
    scale = params.get("intensity_scale")
    scale = None if scale is None else require_float(scale, member=zf.member_label(f"{primary}/{params_member}"),
                                                      field="intensity_scale", positive=True)
    return BridgeArchive(
        path=path,
        era=era,
        backend="pytorch",
        params=params,
        models=models,
        intensity_scale=scale,
        manifest=manifest,
        torch_config=config,
        warnings=warnings,
        notes=notes,
        members={m.name: m.size for m in zf.iter_members()},
    )


class TorchJsonReader(EraReader):
    """``torch-json-1``: root ``manifest.json`` with ``manifest_version: torch-manifest-v1``.

    What its layout guarantees (upstream ``tests/torch/era_fixtures.py``): ``manifest.json`` with
    ``models``, ``version`` '2.0-pytorch', ``backend`` 'pytorch'; ``<model>/params.json`` with ``N``,
    ``gridsize``, ``C``; ``torch_scaling_metadata.pt``. ``model.pth`` may be absent (metadata-only
    bundles), and the metadata's ``model_spec`` payload has no documented shape: we read weights only
    with a ``model_config`` dict we understand, and refuse otherwise.
    """

    era = "torch-json-1"
    backend = "pytorch"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        if JSON_MANIFEST_MEMBER not in zf:
            return False
        m = cached_json(zf, JSON_MANIFEST_MEMBER, hints)
        return isinstance(m, dict) and m.get("manifest_version") == JSON_MANIFEST_VERSION

    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        where = zf.member_label(JSON_MANIFEST_MEMBER)
        manifest = require_dict(cached_json(zf, JSON_MANIFEST_MEMBER, hints), member=where, what=JSON_MANIFEST_MEMBER)
        names = require_field(manifest, "models", list, member=where)
        if manifest.get("backend", JSON_BACKEND) != JSON_BACKEND:
            raise FormatError(f"backend {manifest.get('backend')!r}, expected {JSON_BACKEND!r}", member=where, field="backend")
        names = require_model_names(names, member=where)
        meta = _read_metadata(zf)  # decoded once: checked here, then handed to _read_torch_models
        if isinstance(meta, dict) and "model_config" not in meta:
            raise UnsupportedError(
                f"torch metadata schema {meta.get('schema_version')!r} has no model_config; its model_spec payload "
                "is not documented, so the network cannot be derived safely",
                member=zf.member_label(METADATA_MEMBER),
            )
        return _read_torch_models(zf, path, names, self.era, meta, params_member=JSON_PARAMS_MEMBER, manifest=manifest)


class LightningCheckpointReader(EraReader):
    """A bare Lightning ``.ckpt`` (a torch zip pickle): ``state_dict`` + ``hyper_parameters``.

    One era, two upstream networks: upstream main's (``model_config`` has
    ``use_legacy_decoder_channel_override``; :func:`spec_from_torch`) and torchapi-devel's, which
    Ptychodus 1.7 trains and loads (the four configs hold exactly that branch's dataclass fields;
    :mod:`converters.pytorch.torchapi`). The entry's payload names the variant (``variant``).

    It calls :mod:`converters.pytorch.torchzip` through the module (imported at the top of this file)
    so that ``import converters.pytorch.torchzip`` works as a program's first import: that import
    loads ``ptycho_bridge``, whose package init reaches this module (formats.detect → formats.eras)
    while torchzip is still half-initialised, and a module reference, unlike its names, is already there.
    """

    era = "lightning-ckpt"
    backend = "pytorch"

    @classmethod
    def detect(cls, zf: SafeZip, hints: dict[str, Any]) -> bool:
        return torchzip.is_torch_zip(zf)

    def read(self, zf: SafeZip, path: str, hints: dict[str, Any] | None = None) -> BridgeArchive:
        data = require_dict(torchzip.load_torch_zip(zf, member_label=zf.label, defer_arrays=True), member=zf.label,
                            what="checkpoint")
        # tensors stay deferred: the state_dict's are built when first used (canonical_state_dict), the
        # optimizer's never (only counted); the configs are plain data
        if "hyper_parameters" in data:
            data["hyper_parameters"] = materialise_tree(data["hyper_parameters"])
        if "state_dict" not in data or "hyper_parameters" not in data:
            raise FormatError("torch file is not a Lightning checkpoint (needs state_dict and hyper_parameters)", member=zf.label)
        hp = require_dict(data["hyper_parameters"], member=zf.label, what="hyper_parameters")
        if looks_torchapi(hp):
            return _read_torchapi_checkpoint(zf, path, data, hp, self.era)
        config = torch_config_from(hp, member=f"{zf.label} [hyper_parameters]")
        params: dict[str, Any] = {}
        mc = config["model_config"]
        for cfg_key, legacy in (("n_filters_scale", "n_filters_scale"), ("object_big", "object.big"),
                                ("probe_big", "probe.big"), ("amp_activation", "amp_activation"),
                                ("pad_object", "pad_object"), ("intensity_scale_trainable", "intensity_scale.trainable")):
            if cfg_key in mc:
                params[legacy] = mc[cfg_key]
        N, g = _grid_and_n({}, config, zf.label)
        params["N"], params["gridsize"] = N, g
        extra = {k: v for k, v in hp.items() if k not in TORCH_CONFIG_KEYS}
        if extra.get("parity_scale_mode", "off") != "off":
            mc = dict(mc, parity_scale_mode=extra["parity_scale_mode"])
        entry = torch_model_entry(
            "diffraction_to_obj", data["state_dict"], member=f"{zf.label} [state_dict]",
            N=N, gridsize=g, params={}, model_config=mc,
        )
        entry.payload.update(
            member=zf.label,
            global_step=data.get("global_step"),
            lightning_version=data.get("pytorch-lightning_version"),
            optimizer_states=_count_optimizer_states(data.get("optimizer_states"), member=zf.label),
        )
        warnings = []
        if entry.payload["optimizer_states"]:
            warnings.append("checkpoint holds optimizer state (training only; not needed for inference)")
        config["hyper_parameters"] = extra
        return BridgeArchive(
            path=path,
            era=self.era,
            backend="pytorch",
            params=params,
            models={"diffraction_to_obj": entry},
            intensity_scale=None,
            manifest={},
            torch_config=config,
            warnings=warnings,
            members={m.name: m.size for m in zf.iter_members()},
        )


def _read_torchapi_checkpoint(zf: SafeZip, path: str, data: dict[str, Any], hp: dict[str, Any], era: str) -> BridgeArchive:
    """A Ptychodus 1.7 (upstream torchapi-devel) checkpoint: the four configs decide every width."""
    label = zf.label
    spec, warnings = spec_from_hyper_parameters(hp, member=f"{label} [hyper_parameters]")
    tensors, infos = canonical_state_dict(data["state_dict"], member=f"{label} [state_dict]")
    check_checkpoint_tensors(spec, hp, infos, member=f"{label} [state_dict]")
    optimizer_states = data.get("optimizer_states")
    entry = ModelEntry("diffraction_to_obj", spec, tensors, infos, payload={
        "kind": "torch-state-dict", "member": label, "variant": VARIANT_TORCHAPI,
        "global_step": data.get("global_step"), "lightning_version": data.get("pytorch-lightning_version"),
        "optimizer_states": len(optimizer_states) if isinstance(optimizer_states, list) else 0,
    }, warnings=list(warnings))
    mc, dc = hp["model_config"], hp["data_config"]
    params = {"N": spec.N, "gridsize": spec.gridsize, "n_filters_scale": spec.n_filters_scale,
              "object.big": spec.object_big, "probe.big": spec.probe_big, "amp_activation": mc["amp_activation"],
              "intensity_scale.trainable": mc["intensity_scale_trainable"], "offset": mc["offset"],
              "max_position_jitter": mc["max_position_jitter"], "nphotons": dc["nphotons"]}
    arch_warnings = lightning_version_warning(data)
    if entry.payload["optimizer_states"]:
        arch_warnings.append("checkpoint holds optimizer state (training only; not needed for inference)")
    config: dict[str, Any] = {k: hp[k] for k in TORCHAPI_CONFIG_KEYS}
    config["hyper_parameters"] = {k: v for k, v in hp.items() if k not in TORCHAPI_CONFIG_KEYS}
    return BridgeArchive(
        path=path, era=era, backend="pytorch", params=params, models={"diffraction_to_obj": entry},
        intensity_scale=None, manifest={}, torch_config=config, warnings=arch_warnings,
        members={m.name: m.size for m in zf.iter_members()},
    )


def _count_optimizer_states(states: Any, *, member: str) -> int:
    """How many optimizer states a Lightning checkpoint holds (a list; anything else is malformed)."""
    if states is None:
        return 0
    if not isinstance(states, (list, tuple)):
        raise FormatError(f"optimizer_states must be a list, found {type_name(states)}", member=member,
                          field="optimizer_states")
    return len(states)
