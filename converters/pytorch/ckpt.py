"""Write a Lightning ``.ckpt`` that Ptychodus 1.7 (upstream torchapi-devel) opens — without torch or lightning.

Why: Ptychodus' PyTorch reconstructor loads only these checkpoints
(``PtychoModel._extract_configs_from_checkpoint`` → ``PtychoPINN_Lightning.load_from_checkpoint``),
so a model kept as a ``wts.h5.zip`` (or trained with TF) reaches it only through this writer.

The bytes come from the project's ``torch.save`` writer (:func:`converters.pytorch.torchzip.torch_zip_bytes`:
protocol-2 pickle emitted opcode by opcode, 64-byte aligned storages), so the only globals in
``data.pkl`` are ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
``torch.<T>Storage``: ``torch.load(weights_only=True)`` — what Ptychodus and Lightning run — reads it.
Top level (:data:`~converters.pytorch.layout.CKPT_TOP_LEVEL_ORDER`, the fixture's order):

- ``epoch``/``global_step`` 0, ``pytorch-lightning_version`` (Lightning's checkpoint migration parses it);
- ``state_dict`` ``OrderedDict``: ``model.autoencoder.<upstream key>`` for every network tensor in
  upstream module order, then ``model.forward_model.alpha``/``beta`` ``[num_datasets]`` (mode
  'Unsupervised'; ones when the source has none) — exactly the keys torchapi-devel's module owns,
  since Lightning loads ``strict=True``;
- ``loops`` (a fresh Lightning 2.6 loop state), ``callbacks`` ``{}``, ``optimizer_states`` (a fresh
  Adam state: no slots, one param group over every parameter, lr = training_config.learning_rate),
  ``lr_schedulers`` ``[]``, ``hparams_name`` None: the checkpoint is for inference, training restarts;
- ``hyper_parameters``: the four configs as plain dicts with EVERY torchapi-devel dataclass field, in
  ``dataclasses.asdict`` order: Ptychodus rebuilds the dataclasses from them, so a missing field would
  silently take upstream's default (``cbam_encoder=True``, …) and an unknown one would raise.
"""

from __future__ import annotations

import collections
import copy
import re
from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.layout import (
    CKPT_TOP_LEVEL_ORDER,
    CKPT_ZIP_PREFIX,
    LIGHTNING_PREFIX,
    LIGHTNING_VERSION,
    TORCHAPI_CONFIG_KEYS,
    TORCHAPI_FIELDS,
    TORCHAPI_FORWARD_AUX,
    TORCHAPI_MODES,
    TORCHAPI_TEMPLATE,
)
from converters.pytorch.torchapi import is_kind
from converters.pytorch.torchzip import torch_zip_bytes
from ptycho_bridge.errors import SpecError
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX, canonical_to_torch
from ptycho_bridge.spec.network import (
    NetworkSpec,
    check_tensors,
    expected_tensors,
    torch_legacy_c_outer,
)

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def _progress(*names: str) -> dict[str, int]:
    return {n: 0 for n in names}


def fresh_loops() -> dict[str, Any]:
    """Lightning 2.6's loop state of a trainer that has not run (the fixture's structure, counters 0)."""
    step = {"current": _progress("completed", "ready"), "total": _progress("completed", "ready")}
    batch = {"current": _progress("completed", "processed", "ready", "started"),
             "total": _progress("completed", "processed", "ready", "started")}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": 0},
            "epoch_loop.batch_progress": {**copy.deepcopy(batch), "is_last_batch": False},
            "epoch_loop.scheduler_progress": copy.deepcopy(step),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                "step": copy.deepcopy(step),
                "zero_grad": {"current": _progress("completed", "ready", "started"),
                              "total": _progress("completed", "ready", "started")}}},
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": copy.deepcopy(step),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": {**copy.deepcopy(batch), "is_last_batch": False},
            "epoch_progress": copy.deepcopy(batch),
        },
        "validate_loop": {"state_dict": {}, "batch_progress": {**copy.deepcopy(batch), "is_last_batch": False}},
        "test_loop": {"state_dict": {}, "batch_progress": {**copy.deepcopy(batch), "is_last_batch": False}},
        "predict_loop": {"state_dict": {}, "batch_progress": copy.deepcopy(batch)},
    }


def fresh_adam_state(n_params: int, lr: float) -> list[dict[str, Any]]:
    """``torch.optim.Adam(params, lr).state_dict()`` before any step (torch 2.13's param-group keys)."""
    return [{"state": {}, "param_groups": [{
        "lr": lr, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0, "amsgrad": False, "maximize": False,
        "foreach": None, "capturable": False, "differentiable": False, "fused": None,
        "decoupled_weight_decay": False, "params": list(range(n_params))}]}]


# -- spec → torchapi-devel expressibility and configs -------------------------------------------------
# -- spec → torchapi-devel spec and configs -----------------------------------------------------------
def torchapi_spec(spec: NetworkSpec) -> NetworkSpec:
    """``spec`` as torchapi-devel builds it, or :class:`ConversionRefused` (``spec.expressible`` rows
    ``ptychodus-ckpt``). Only ``outer_mask`` can change: an unused outer branch (probe_big=False) is the
    same network masked or not, and torchapi-devel's spec says unmasked."""
    spec.check()
    require(spec, "ptychodus-ckpt")
    if spec.outer_mask:
        spec = NetworkSpec(**{**spec.to_dict(), "amp_channels": spec.amp_channels, "outer_mask": False})
        spec.check()
    return spec


def c_outer_fraction(spec: NetworkSpec, current: Any = None) -> float:
    """A ``decoder_last_c_outer_fraction`` giving ``spec.c_outer``; ``current`` is kept when it already does."""
    nfs = spec.n_filters_scale
    if is_kind(current, "float") and torch_legacy_c_outer(nfs, float(current)) == spec.c_outer:
        return current
    latent = spec.latent_width
    frac = spec.c_outer / latent
    if int(latent * frac) != spec.c_outer:  # float rounding below the integer: aim at its middle
        frac = (spec.c_outer + 0.5) / latent
    assert torch_legacy_c_outer(nfs, frac) == spec.c_outer
    return frac


def torchapi_configs(spec: NetworkSpec, source: Mapping[str, Any] | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The four configs: template ← same-named, type-compatible fields of ``source`` ← every network field
    from ``spec``. Returns (configs, notes). Source fields torchapi-devel lacks are dropped (noted)."""
    spec = torchapi_spec(spec)
    notes: list[str] = []
    cfg = {k: copy.deepcopy(v) for k, v in TORCHAPI_TEMPLATE.items()}
    for section in TORCHAPI_CONFIG_KEYS:
        src = (source or {}).get(section)
        if not isinstance(src, Mapping):
            if source is not None:
                notes.append(f"source has no {section}: template values used")
            continue
        dropped = []
        for name, value in src.items():
            kinds = TORCHAPI_FIELDS[section].get(name)
            if kinds is None:
                dropped.append(name)
            elif any(is_kind(value, k) for k in kinds):
                cfg[section][name] = copy.deepcopy(value)
            else:
                notes.append(f"{section}.{name}={value!r} is not a {'/'.join(kinds)}: template value kept")
        if dropped:
            notes.append(f"{section}: fields torchapi-devel does not have were dropped: {sorted(dropped)}")
    g, C = spec.gridsize, spec.channels
    dc, mc = cfg["data_config"], cfg["model_config"]
    dc.update(N=spec.N, C=C, grid_size=(g, g))
    amp_name = "sigmoid" if spec.amp_activation == "sigmoid" else (
        mc["amp_activation"] if mc["amp_activation"] not in ("sigmoid",) else "silu")
    mc.update(
        C_model=C, C_forward=C, n_filters_scale=spec.n_filters_scale, object_big=spec.object_big,
        probe_big=spec.probe_big, amp_activation=amp_name, batch_norm=False, cbam_encoder=spec.cbam_encoder,
        cbam_bottleneck=spec.cbam_bottleneck, use_shared_decoder=False, cbam_decoder=False, eca_decoder=False,
        spatial_decoder=False, decoder_last_amp_channels=spec.head_channels("amp"),
        decoder_last_c_outer_fraction=c_outer_fraction(spec, mc.get("decoder_last_c_outer_fraction")),
    )
    if not spec.cbam_encoder:
        mc["eca_encoder"] = False  # with CBAM off, ECA would be built (inert weights the spec does not have)
    if mc["mode"] not in TORCHAPI_MODES:
        mc["mode"] = "Unsupervised"
    if source is None or not isinstance(source.get("model_config"), Mapping):
        mc["intensity_scale_trainable"] = False  # forward_predict then scales by input_scale_factor
    return cfg, notes




# -- state dict and checkpoint --------------------------------------------------------------------------
def checkpoint_state_dict(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], model_config: Mapping[str, Any]
                          ) -> tuple["collections.OrderedDict[str, np.ndarray]", list[str]]:
    """Exactly the keys torchapi-devel's Lightning module owns, upstream module order, float32 copies."""
    notes: list[str] = []
    shapes = {name: tuple(np.shape(v)) for name, v in tensors.items()}
    check_tensors(spec, shapes, member="canonical tensors", allow_extra_prefixes=(TORCH_AUX_PREFIX,))
    out: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    for name in expected_tensors(spec):
        value = np.asarray(tensors[name])
        if value.dtype != np.float32:
            raise SpecError(f"tensor {name!r} has dtype {value.dtype}; upstream's parameters are float32",
                            member="canonical tensors")
        out[canonical_to_torch(name, prefix=LIGHTNING_PREFIX)] = np.array(value, copy=True)
    aux = {k[len(TORCH_AUX_PREFIX):]: v for k, v in tensors.items() if k.startswith(TORCH_AUX_PREFIX)}
    if model_config["mode"] == "Unsupervised":
        n = int(model_config["num_datasets"])
        for name in TORCHAPI_FORWARD_AUX:
            value = aux.pop(name, None)
            if value is None:
                value = np.ones((n,), dtype=np.float32)
                notes.append(f"model.{name} filled with ones [{n}] (training-only; forward_predict ignores it)")
            value = np.asarray(value)
            if value.shape != (n,) or value.dtype != np.float32:
                raise SpecError(f"training tensor {name!r} is {value.dtype}{list(value.shape)}, expected "
                                f"float32[{n}] (model_config.num_datasets)", member="canonical tensors")
            out["model." + name] = np.array(value, copy=True)
    if aux:
        notes.append(f"training-only tensors torchapi-devel does not have were dropped: {sorted(aux)}")
    return out, notes


def checkpoint_object(spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *,
                      configs: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The plain object ``torch.save`` would write (tensors as numpy arrays), and notes.

    ``configs``: the source's four configs (any field set; see :func:`torchapi_configs`), or None.
    Raises :class:`ConversionRefused` when torchapi-devel cannot build ``spec``.
    """
    spec = torchapi_spec(spec)
    cfg, notes = torchapi_configs(spec, configs)
    state, more = checkpoint_state_dict(spec, tensors, cfg["model_config"])
    notes += more
    top: dict[str, Any] = {
        "epoch": 0, "global_step": 0, "pytorch-lightning_version": LIGHTNING_VERSION, "state_dict": state,
        "loops": fresh_loops(), "callbacks": {},
        "optimizer_states": fresh_adam_state(len(state), float(cfg["training_config"]["learning_rate"])),
        "lr_schedulers": [], "hparams_name": None, "hyper_parameters": cfg,
    }
    return {k: top[k] for k in CKPT_TOP_LEVEL_ORDER}, notes


def zip_prefix(filename: str) -> str:
    """The folder ``torch.save`` names inside the zip: the file's stem, or ``archive`` if not a plain name."""
    stem = filename.rsplit("/", 1)[-1].split(".", 1)[0]
    return stem if _PLAIN_NAME.fullmatch(stem) else CKPT_ZIP_PREFIX


def encode_checkpoint(obj: Mapping[str, Any], *, filename: str = "model.ckpt") -> bytes:
    """The ``torch.save`` bytes of :func:`checkpoint_object`'s object, zip folder named as torch names it."""
    return torch_zip_bytes(dict(obj), prefix=zip_prefix(filename))


__all__ = [
    "c_outer_fraction",
    "checkpoint_object",
    "checkpoint_state_dict",
    "encode_checkpoint",
    "fresh_adam_state",
    "fresh_loops",
    "torchapi_configs",
    "torchapi_spec",
    "zip_prefix",
]
