"""Write the legacy members upstream's PyTorch loaders read, with numpy only (no torch needed).

Why: a bridge-2 archive with ``backend='pytorch'`` must stay openable by upstream's
``load_inference_bundle_torch`` (and not fool the plain ``load_torch_bundle``), so it carries the
members ``save_torch_bundle`` writes (``docs/upstream-formats.md`` §2-§3): ``manifest.dill``,
``<model>/model.pth`` (a ``torch.save`` zip of the Lightning ``state_dict``; the autoencoder's is a
sentinel dict), ``<model>/params.dill`` and ``torch_scaling_metadata.pt`` (the four torch configs
that decide CBAM, batch norm and the ``c_outer`` override, which ``params.dill`` does not carry).

``torch.save``'s zip format is simple enough to write by hand: ``<prefix>/data.pkl`` is a protocol-2
pickle whose tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False,
OrderedDict())`` with the storage given as a persistent id ``('storage', torch.<T>Storage, key,
'cpu', numel)``; ``<prefix>/data/<key>`` holds the raw little-endian bytes, 64-byte aligned. We emit
the pickle opcodes directly (:class:`_PickleWriter`), so the only globals that can appear are the
three ``torch.load(weights_only=True)`` allows for state dicts, and nothing is imported to write them.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
import struct
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from ptycho_bridge.errors import ConversionRefused, SpecError
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.mapping import TORCH_AUX_PREFIX, canonical_to_torch
from ptycho_bridge.spec.network import (
    NetworkSpec,
    check_tensors,
    expected_tensors,
    torch_legacy_c_outer,
)

TORCH_VERSION = "2.0-pytorch"
METADATA_MEMBER = "torch_scaling_metadata.pt"
METADATA_SCHEMA = "ci-entrypoints-v1"
SENTINEL_KEY = "_sentinel"
LIGHTNING_PREFIX = "model.autoencoder."
STORAGE_ALIGNMENT = 64
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ALIGN_EXTRA_ID = 0x4246  # b"FB", the extra-field id torch's own writer pads with

# numpy dtype → torch storage class (``torch.<name>``), the ones ``_rebuild_tensor_v2`` understands.
STORAGE_CLASSES: dict[str, str] = {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage",
}

# Training-only parameters of upstream's Unsupervised ``PtychoPINN`` (``[num_datasets]`` each), in
# state_dict order after the autoencoder; forward_predict never reads them (upstream-architecture §3.1).
FORWARD_MODEL_AUX = ("forward_model.alpha", "forward_model.beta", "forward_model.rect_scaler.s1",
                     "forward_model.rect_scaler.s2")

# -- configuration templates -----------------------------------------------------------------------
# The field sets (and values) of the four torch config dicts upstream's ``run_cdi_example_torch``
# writes to ``torch_scaling_metadata.pt`` (docs/upstream-formats.md §3). Every field that decides the
# network is overwritten from the spec (:func:`torch_config_for`); shared fields come from params.
TORCH_CONFIG_TEMPLATE: dict[str, dict[str, Any]] = {
    "data_config": {
        "nphotons": 1e9, "scale_contract_version": "ci_intensity_v2", "measurement_domain": "count_intensity",
        "N": 64, "C": 1, "K": 4, "K_quadrant": 30, "n_subsample": 7, "subsample_seed": None, "grid_size": (1, 1),
        "neighbor_function": "Nearest", "min_neighbor_distance": 0.0, "max_neighbor_distance": 3.0,
        "scan_pattern": "Isotropic", "normalize": "Batch", "probe_scale": 4.0, "probe_normalize": True,
        "data_scaling": "Parseval", "phase_subtraction": True, "x_bounds": (0.1, 0.9), "y_bounds": (0.1, 0.9),
    },
    "model_config": {
        "mode": "Unsupervised", "architecture": "cnn", "fno_modes": 12, "fno_width": 32, "fno_blocks": 4,
        "fno_cnn_blocks": 2, "learned_input_channels": 1, "fno_input_transform": "none",
        "max_hidden_channels": None, "resnet_width": None, "spectral_bottleneck_blocks": 6,
        "spectral_bottleneck_modes": 12, "spectral_bottleneck_share_weights": True,
        "spectral_bottleneck_gate_init": 0.1, "spectral_bottleneck_gate_mode": "shared",
        "generator_output_mode": "real_imag", "cnn_output_mode": "amp_phase", "use_shared_decoder": False,
        "intensity_scale_trainable": False, "intensity_scale": 10000.0, "max_position_jitter": 10,
        "num_datasets": 1, "C_model": 1, "n_filters_scale": 2, "amp_activation": "silu", "batch_norm": False,
        "probe_mask": False, "probe_mask_tensor": None, "probe_mask_sigma": 1.0, "probe_mask_diameter": None,
        "edge_pad": 10, "decoder_last_c_outer_fraction": 0.125, "decoder_last_amp_channels": 1,
        "use_legacy_decoder_channel_override": False, "eca_encoder": False, "cbam_encoder": False,
        "cbam_bottleneck": False, "cbam_decoder": False, "eca_decoder": False, "spatial_decoder": False,
        "decoder_spatial_kernel": 7, "object_big": True, "probe_big": True, "offset": 6, "C_forward": 1,
        "training_patch_weighting": "central_mask", "physics_forward_mode": "amplitude",
        "rect_s1s2_trainable": True, "rect_s1s2_init": "ones", "amplitude_physics_gain": 1.0, "pad_object": True,
        "gaussian_smoothing_sigma": 0.0, "loss_function": "Poisson", "amp_loss": None, "phase_loss": None,
        "amp_loss_coeff": 1.0, "phase_loss_coeff": 1.0,
    },
    "training_config": {
        "training_directories": [], "nll": True, "device": "cuda", "strategy": "ddp", "n_devices": 1,
        "framework": "Lightning", "orchestrator": "Mlflow", "learning_rate": 0.001, "epochs": 50, "batch_size": 16,
        "epochs_fine_tune": 0, "fine_tune_gamma": 0.1, "scheduler": "Default", "lr_warmup_epochs": 0,
        "lr_min_ratio": 0.1, "plateau_factor": 0.5, "plateau_patience": 2, "plateau_min_lr": 5e-05,
        "plateau_threshold": 0.0, "num_workers": 4, "accum_steps": 1, "gradient_clip_val": None,
        "gradient_clip_algorithm": "norm", "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0,
        "adam_beta1": 0.9, "adam_beta2": 0.999, "log_grad_norm": False, "grad_norm_log_freq": 1,
        "stage_1_epochs": 0, "stage_2_epochs": 0, "stage_3_epochs": 0, "physics_weight_schedule": "cosine",
        "stage_3_lr_factor": 0.1, "torch_loss_mode": "poisson", "torch_mae_pred_l2_match_target": False,
        "experiment_name": "Synthetic_Runs", "notes": "", "model_name": "PtychoPINNv2",
        "output_dir": "training_outputs", "train_data_file": None, "test_data_file": None, "n_groups": 512,
    },
    "inference_config": {
        "middle_trim": 32, "batch_size": 1000, "experiment_number": 0, "pad_eval": True, "window": 20,
        "patch_weighting": "probe", "varpro_scaling": True, "log_patch_stats": False, "patch_stats_limit": None,
    },
}
TORCH_CONFIG_KEYS = ("data_config", "model_config", "training_config", "inference_config")

# Legacy params key → (torch config, field) where the names differ; same-named fields are copied as is.
PARAMS_TO_CONFIG_RENAMES: dict[str, tuple[str, str]] = {
    "nepochs": ("training_config", "epochs"),
    "output_prefix": ("training_config", "output_dir"),
    "train_data_file_path": ("training_config", "train_data_file"),
    "test_data_file_path": ("training_config", "test_data_file"),
    "probe.mask": ("model_config", "probe_mask"),
}
# Config fields never taken from params: the network is decided by the spec alone, and the torch
# ``intensity_scale`` field is a training initial value (params' ``intensity_scale`` is the trained one).
_SPEC_OWNED = {"intensity_scale", "intensity_scale_trainable", "amp_activation", "object_big", "probe_big",
               "pad_object", "n_filters_scale", "N", "C", "C_model", "C_forward", "grid_size", "batch_norm",
               "cbam_encoder", "cbam_bottleneck", "architecture", "cnn_output_mode", "use_shared_decoder",
               "use_legacy_decoder_channel_override", "decoder_last_c_outer_fraction", "decoder_last_amp_channels"}

# The keys of upstream's torch ``params.dill`` in its order (dataclass_to_legacy_dict of the TF
# TrainingConfig + intensity_scale + _version), with the dataclass defaults for keys a source lacks
# (docs/upstream-architecture.md §4; None-valued fields are kept, unlike in TF params.dill).
TORCH_PARAMS_DEFAULTS: dict[str, Any] = {
    "batch_size": 16, "nepochs": 50, "mae_weight": 0.0, "nll_weight": 1.0, "realspace_mae_weight": 0.0,
    "realspace_weight": 0.0, "nphotons": 1e9, "n_groups": 512, "n_images": None, "n_subsample": None,
    "subsample_seed": None, "neighbor_count": 4, "enable_oversampling": False, "neighbor_pool_size": None,
    "sequential_sampling": False, "backend": "pytorch", "torch_loss_mode": "poisson",
    "torch_mae_pred_l2_match_target": False, "gradient_clip_val": None, "gradient_clip_algorithm": "norm",
    "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999,
    "scheduler": "Default", "lr_warmup_epochs": 0, "lr_min_ratio": 0.1, "plateau_factor": 0.5,
    "plateau_patience": 2, "plateau_min_lr": 5e-05, "plateau_threshold": 0.0, "N": 64, "gridsize": 1,
    "n_filters_scale": 2, "model_type": "pinn", "architecture": "cnn", "fno_modes": 12, "fno_width": 32,
    "fno_blocks": 4, "fno_cnn_blocks": 2, "learned_input_channels": 1, "max_hidden_channels": None,
    "resnet_width": None, "fno_input_transform": "none", "generator_output_mode": "real_imag",
    "amp_activation": "sigmoid", "probe_mask_sigma": 1.0, "probe_mask_diameter": None, "pad_object": True,
    "probe_scale": 4.0, "gaussian_smoothing_sigma": 0.0, "object.big": True, "probe.big": True,
    "probe.mask": False, "probe.trainable": False, "intensity_scale.trainable": False,
    "positions.provided": True, "output_prefix": "training_outputs", "train_data_file_path": None,
    "test_data_file_path": None, "intensity_scale": 1.0, "_version": TORCH_VERSION,
}


# -- torch.save zip serialization --------------------------------------------------------------
class _PickleWriter:
    """Protocol-2 pickle opcodes for plain data plus numpy arrays as torch tensors.

    Supports dict, OrderedDict, list, tuple, str, int, float, bool, None, numpy scalars and arrays
    of :data:`STORAGE_CLASSES` dtypes. Globals are memoised (BINPUT/BINGET) as torch does.
    """

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.memo: dict[tuple[str, str], int] = {}
        self.storages: list[tuple[str, bytes]] = []

    def dumps(self, obj: Any) -> bytes:
        self.out.write(b"\x80\x02")  # PROTO 2
        self._save(obj)
        self.out.write(b".")  # STOP
        return self.out.getvalue()

    # opcodes
    def _global(self, module: str, name: str) -> None:
        key = (module, name)
        if key in self.memo:
            index = self.memo[key]
            self.out.write(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))
            return
        self.out.write(b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")
        index = len(self.memo)
        self.memo[key] = index
        self.out.write(b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index))

    def _int(self, v: int) -> None:
        if 0 <= v < 256:
            self.out.write(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            self.out.write(b"M" + struct.pack("<H", v))
        elif -(2**31) <= v < 2**31:
            self.out.write(b"J" + struct.pack("<i", v))
        else:
            raw = v.to_bytes((v.bit_length() >> 3) + 1, "little", signed=True)
            if len(raw) > 255:
                raise ValueError(f"integer {v} is too large to serialise")
            self.out.write(b"\x8a" + bytes([len(raw)]) + raw)

    def _str(self, v: str) -> None:
        raw = v.encode("utf-8")
        self.out.write(b"X" + struct.pack("<I", len(raw)) + raw)

    def _tuple(self, items: Sequence[Any]) -> None:
        if not items:
            self.out.write(b")")
            return
        if len(items) <= 3:
            for item in items:
                self._save(item)
            self.out.write(b"\x85\x86\x87"[len(items) - 1 : len(items)])
            return
        self.out.write(b"(")
        for item in items:
            self._save(item)
        self.out.write(b"t")

    def _setitems(self, mapping: Mapping[Any, Any]) -> None:
        if mapping:
            self.out.write(b"(")
            for k, v in mapping.items():
                self._save(k)
                self._save(v)
            self.out.write(b"u")

    def _tensor(self, arr: np.ndarray) -> None:
        storage = STORAGE_CLASSES.get(arr.dtype.name)
        if storage is None:
            raise TypeError(f"cannot store a {arr.dtype} array as a torch tensor (supported: {sorted(STORAGE_CLASSES)})")
        data = arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d arrays 0-d
        key = str(len(self.storages))
        self.storages.append((key, data.tobytes()))
        stride, step = [], 1
        for dim in reversed(data.shape):
            stride.insert(0, step)
            step *= int(dim)
        self._global("torch._utils", "_rebuild_tensor_v2")
        self.out.write(b"(")
        self.out.write(b"(")
        self._str("storage")
        self._global("torch", storage)
        self._str(key)
        self._str("cpu")
        self._int(int(data.size))
        self.out.write(b"t" + b"Q")  # TUPLE, BINPERSID
        self._int(0)
        self._tuple([int(d) for d in data.shape])
        self._tuple(stride)
        self.out.write(b"\x89")  # requires_grad=False
        self._global("collections", "OrderedDict")
        self.out.write(b")R")  # backward_hooks = OrderedDict()
        self.out.write(b"tR")

    def _save(self, obj: Any) -> None:
        if obj is None:
            self.out.write(b"N")
        elif obj is True or isinstance(obj, np.bool_) and bool(obj):
            self.out.write(b"\x88")
        elif obj is False or isinstance(obj, np.bool_):
            self.out.write(b"\x89")
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, (float, np.floating)):
            self.out.write(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            self._str(obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            self.out.write(b"]")
            if obj:
                self.out.write(b"(")
                for item in obj:
                    self._save(item)
                self.out.write(b"e")
        elif isinstance(obj, collections.OrderedDict):
            self._global("collections", "OrderedDict")
            self.out.write(b")R")
            self._setitems(obj)
        elif isinstance(obj, dict):
            self.out.write(b"}")
            self._setitems(obj)
        else:
            raise TypeError(f"cannot serialise a {type(obj).__name__} into a torch zip (plain data and arrays only)")


def _aligned_zipinfo(name: str, offset: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    pad = (-(offset + 30 + len(name.encode("utf-8")) + 4)) % STORAGE_ALIGNMENT
    info.extra = struct.pack("<HH", _ALIGN_EXTRA_ID, pad) + b"Z" * pad
    return info


def torch_zip_bytes(obj: Any, *, prefix: str = "archive") -> bytes:
    """``torch.save(obj)`` bytes, written without torch: the zip format torch ≥ 1.6 reads.

    Members (in torch's order): ``data.pkl``, ``.format_version``, ``.storage_alignment``,
    ``byteorder``, ``data/<key>`` (one per array, little-endian, data 64-byte aligned), ``version``
    and ``.data/serialization_id`` (derived from the content, so equal input gives equal bytes).
    """
    writer = _PickleWriter()
    pkl = writer.dumps(obj)
    digest = hashlib.sha256(pkl)
    for _key, raw in writer.storages:
        digest.update(raw)
    serial = str(int(digest.hexdigest(), 16) % 10**40).zfill(40)
    records: list[tuple[str, bytes]] = [
        ("data.pkl", pkl), (".format_version", b"1"), (".storage_alignment", str(STORAGE_ALIGNMENT).encode()),
        ("byteorder", b"little"),
        *((f"data/{key}", raw) for key, raw in writer.storages),
        ("version", b"3\n"), (".data/serialization_id", serial.encode()),
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=False) as zf:
        for name, data in records:
            zf.writestr(_aligned_zipinfo(f"{prefix}/{name}", buf.tell()), data)
    return buf.getvalue()


def _plain_pickle(obj: Any) -> bytes:
    """A protocol-4 pickle of plain data (what dill writes for dicts of primitives): no globals, no calls."""
    import pickletools

    data = pickle.dumps(obj, protocol=4)
    for op, _arg, _pos in pickletools.genops(data):
        if op.name in ("GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "INST", "OBJ"):
            raise TypeError(f"legacy pickle members must hold plain data only (found {op.name})")
    return data


# -- the configs, params and state dict ---------------------------------------------------------
def c_outer_override(spec: NetworkSpec) -> dict[str, Any]:
    """The torch model_config fields that give ``spec.c_outer`` latent channels to the outer branch.

    Upstream torch routes ``Cout`` channels by default; any other count needs
    ``use_legacy_decoder_channel_override`` with a fraction ``f`` such that
    ``max(1, int(32·nfs·clamp(f, 0, 0.5))) == c_outer`` (upstream-architecture.md §2.3, §3.2).
    """
    cout = spec.channels_out
    if spec.c_outer == cout:
        return {"use_legacy_decoder_channel_override": False}  # the fraction fields are then unread
    latent = spec.latent_width
    fraction = spec.c_outer / latent
    if int(latent * fraction) != spec.c_outer:  # float rounding below the integer: aim at its middle
        fraction = (spec.c_outer + 0.5) / latent
    if not (0.0 <= fraction <= 0.5) or torch_legacy_c_outer(spec.n_filters_scale, fraction) != spec.c_outer:
        raise ConversionRefused(
            f"c_outer={spec.c_outer}: torch's legacy override can route at most {latent // 2} of {latent} latent "
            "channels to the outer branch",
            field="c_outer", value=spec.c_outer,
        )
    return {"use_legacy_decoder_channel_override": True, "decoder_last_c_outer_fraction": fraction,
            "decoder_last_amp_channels": cout}


def check_torch_expressible(spec: NetworkSpec) -> None:
    """Raise :class:`ConversionRefused` unless upstream torch builds exactly this network."""
    spec.check()
    require(spec, "pytorch-archive")


def _compatible(template: Any, value: Any) -> bool:
    if isinstance(value, np.ndarray) or isinstance(value, (dict, list)):
        return False
    if template is None:
        return value is None or isinstance(value, (bool, int, float, str))
    if isinstance(template, bool):
        return isinstance(value, bool)
    if isinstance(template, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(template, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(template, str):
        return isinstance(value, str)
    if isinstance(template, tuple):
        return isinstance(value, tuple) and len(value) == len(template)
    return False


def torch_config_for(
    spec: NetworkSpec, params: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The four torch config dicts for ``spec``: ``base`` (a source's own torch config) or the template,
    then same-named (and renamed) legacy params, then every network-deciding field from the spec."""
    check_torch_expressible(spec)
    config: dict[str, dict[str, Any]] = {}
    for key in TORCH_CONFIG_KEYS:
        source = (base or {}).get(key)
        config[key] = dict(source) if isinstance(source, Mapping) else dict(TORCH_CONFIG_TEMPLATE[key])
    if base is None:
        for key in ("data_config", "model_config", "training_config"):
            section = config[key]
            for field_name in section:
                if field_name in params and field_name not in _SPEC_OWNED and _compatible(section[field_name], params[field_name]):
                    value = params[field_name]
                    section[field_name] = float(value) if isinstance(section[field_name], float) else value
        for legacy, (key, field_name) in PARAMS_TO_CONFIG_RENAMES.items():
            if legacy in params and _compatible(config[key].get(field_name), params[legacy]):
                config[key][field_name] = params[legacy]
    g, channels = spec.gridsize, spec.channels
    config["data_config"].update(N=spec.N, C=channels, grid_size=(g, g))
    mc = config["model_config"]
    mc.update(
        architecture="cnn", cnn_output_mode="amp_phase", use_shared_decoder=False,
        C_model=channels, C_forward=channels, n_filters_scale=spec.n_filters_scale,
        object_big=spec.object_big, probe_big=spec.probe_big, pad_object=True,
        cbam_encoder=spec.cbam_encoder, cbam_bottleneck=spec.cbam_bottleneck, batch_norm=spec.batch_norm,
    )
    if spec.amp_activation == "sigmoid":
        mc["amp_activation"] = "sigmoid"
    elif mc.get("amp_activation") in (None, "sigmoid"):
        mc["amp_activation"] = "silu"  # upstream torch's own name for swish
    if base is None:
        mc["intensity_scale_trainable"] = False
    mc.update(c_outer_override(spec))
    return config


def torch_params_dill(
    params: Mapping[str, Any], spec: NetworkSpec, *, intensity_scale: float, model_config: Mapping[str, Any]
) -> dict[str, Any]:
    """The plain dict upstream's torch ``params.dill`` holds, in its key order.

    Values come from ``params`` where present, else the dataclass defaults; network fields come from
    the spec, and ``intensity_scale.trainable`` equals the model_config's ``intensity_scale_trainable``
    so that upstream's plain ``load_torch_bundle`` rebuilds the same scaling as the metadata path.
    """
    out: dict[str, Any] = {}
    for key, default in TORCH_PARAMS_DEFAULTS.items():
        value = params.get(key, default)
        if isinstance(value, np.generic):
            value = value.item()
        if not (value is None or isinstance(value, (bool, int, float, str))):
            value = default
        out[key] = value
    out.update({
        "N": spec.N, "gridsize": spec.gridsize, "n_filters_scale": spec.n_filters_scale,
        "object.big": spec.object_big, "probe.big": spec.probe_big, "pad_object": True,
        "amp_activation": str(model_config.get("amp_activation", "sigmoid")), "architecture": "cnn",
        "backend": "pytorch", "intensity_scale.trainable": bool(model_config.get("intensity_scale_trainable", False)),
        "intensity_scale": float(intensity_scale), "_version": TORCH_VERSION,
    })
    return out


def state_dict_from_canonical(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    *,
    prefix: str = "model.autoencoder.",
    aux: Mapping[str, np.ndarray] | None = None,
) -> "collections.OrderedDict[str, np.ndarray]":
    """Upstream torch ``state_dict`` (numpy values, upstream key order) for writing ``model.pth``.

    The network tensors are checked strictly against ``spec``. Training-only tensors (canonical
    names under ``training.``, e.g. ``training.forward_model.alpha``) come from ``tensors`` and
    ``aux``; ``aux`` wins where both hold one (converters use it to fill what upstream's strict
    loader needs). ``prefix`` is ``model.autoencoder.`` (Lightning) or ``autoencoder.`` (bare).
    """
    shapes = {name: tuple(np.shape(value)) for name, value in tensors.items()}
    check_tensors(spec, shapes, member="canonical tensors", allow_extra_prefixes=(TORCH_AUX_PREFIX,))
    extras: dict[str, np.ndarray] = {k: v for k, v in tensors.items() if k.startswith(TORCH_AUX_PREFIX)}
    for name, value in (aux or {}).items():
        if not name.startswith(TORCH_AUX_PREFIX):
            raise SpecError(f"auxiliary tensor {name!r} must be named under {TORCH_AUX_PREFIX!r}", member="canonical tensors")
        extras[name] = value
    merged = {**{name: tensors[name] for name in expected_tensors(spec)}, **extras}
    out: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    for name, value in merged.items():
        key = canonical_to_torch(name, prefix=prefix)
        if key in out:
            raise SpecError(f"two tensors map to the torch key {key!r}", member="canonical tensors")
        out[key] = np.array(value, copy=True)
    return out


def lightning_state_dict(
    spec: NetworkSpec, tensors: Mapping[str, np.ndarray], *, model_config: Mapping[str, Any]
) -> "collections.OrderedDict[str, np.ndarray]":
    """Upstream's Lightning ``state_dict`` (upstream key names and order) from canonical tensors.

    Network tensors follow :func:`expected_tensors` (upstream's module order); training-only tensors
    (``training.*``) follow. For the Unsupervised model, missing ``forward_model`` parameters are
    filled with ones ``[num_datasets]`` (their initial value; forward_predict never reads them).
    """
    aux = {k: np.asarray(v) for k, v in tensors.items() if k.startswith(TORCH_AUX_PREFIX)}
    if model_config.get("mode", "Unsupervised") == "Unsupervised":
        n = int(model_config.get("num_datasets", 1))
        for name in FORWARD_MODEL_AUX:
            aux.setdefault(TORCH_AUX_PREFIX + name, np.ones((n,), dtype=np.float32))
        ordered = [TORCH_AUX_PREFIX + n_ for n_ in FORWARD_MODEL_AUX]
        aux = {**{k: aux[k] for k in ordered}, **{k: v for k, v in aux.items() if k not in ordered}}
    return state_dict_from_canonical(spec, tensors, prefix=LIGHTNING_PREFIX, aux=aux)


def torch_legacy_members(
    spec: NetworkSpec,
    tensors: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    *,
    torch_config: Mapping[str, Any] | None,
    intensity_scale: float,
    models: Sequence[str] = ("diffraction_to_obj", "autoencoder"),
) -> dict[str, bytes]:
    """Every member ``save_torch_bundle`` (+ its scaling metadata) writes, as ``{path: bytes}``.

    ``torch_config`` is the source's torch config (model/data/training/inference dicts) or None to
    build one from the template, params and spec (:func:`torch_config_for`). The first model gets
    the weights; any other is upstream's sentinel ``{'_sentinel': name}``.
    """
    if not models:
        raise ValueError("at least one model name is required")
    if not (isinstance(intensity_scale, (int, float)) and math.isfinite(intensity_scale) and intensity_scale > 0):
        raise ValueError(f"intensity_scale must be a positive finite number, got {intensity_scale!r}")
    config = torch_config_for(spec, params, torch_config)
    mc = config["model_config"]
    params_blob = _plain_pickle(torch_params_dill(params, spec, intensity_scale=intensity_scale, model_config=mc))
    members: dict[str, bytes] = {
        "manifest.dill": _plain_pickle({"models": list(models), "version": TORCH_VERSION}),
    }
    for index, name in enumerate(models):
        payload: Any = lightning_state_dict(spec, tensors, model_config=mc) if index == 0 else {SENTINEL_KEY: name}
        members[f"{name}/model.pth"] = torch_zip_bytes(payload, prefix="model")
        members[f"{name}/params.dill"] = params_blob
    metadata = {"schema_version": METADATA_SCHEMA, **{k: config[k] for k in TORCH_CONFIG_KEYS}, "ci_statistics": None}
    members[METADATA_MEMBER] = torch_zip_bytes(metadata, prefix="archive")
    return members


__all__ = [
    "TORCH_CONFIG_TEMPLATE",
    "TORCH_PARAMS_DEFAULTS",
    "c_outer_override",
    "check_torch_expressible",
    "lightning_state_dict",
    "state_dict_from_canonical",
    "torch_config_for",
    "torch_legacy_members",
    "torch_params_dill",
    "torch_zip_bytes",
]
