"""Every fact of the PyTorch archive formats, in one place: member names, versions, key orders, dtypes.

Why: the reader (:mod:`converters.pytorch.read`), the writers (:mod:`converters.pytorch.write`,
:mod:`converters.pytorch.configs`) and the ``torch.save`` zip codec (:mod:`converters.pytorch.torchzip`)
must agree on these byte for byte; defined once here, a change to one direction cannot silently miss
the other. Formats: ``torch-bundle-2`` (upstream ``save_torch_bundle``, ../shared/docs/upstream-formats.md §2-§3),
``torch-json-1`` (newer upstream, root ``manifest.json``) and the ``torch.save`` zip inside both.
This module imports only the core's name mapping: it is a leaf, importable from anywhere without an import cycle.
"""

from __future__ import annotations

from typing import Any

from ptycho_bridge.spec.mapping import LIGHTNING_AUTOENCODER_PREFIX

# -- torch-bundle-2 (save_torch_bundle) ------------------------------------------------------------
# ``manifest.dill`` and ``params.dill`` ``version`` / ``_version`` of upstream's torch bundles.
TORCH_VERSION = "2.0-pytorch"
# The torch configs member (a torch.save zip with the four config dicts, see TORCH_CONFIG_KEYS).
METADATA_MEMBER = "torch_scaling_metadata.pt"
METADATA_SCHEMA = "ci-entrypoints-v1"
# Upstream saves ``{SENTINEL_KEY: model name}`` instead of weights for every model but the first.
SENTINEL_KEY = "_sentinel"
# The models ``save_torch_bundle`` writes, weights first.
TORCH_MODELS = ("diffraction_to_obj", "autoencoder")
# state_dict key prefix of the autoencoder inside upstream's Lightning module (the one the writer
# uses); ptycho_bridge.spec.mapping.TORCH_AUTOENCODER_PREFIXES lists it first, with the bare
# PtychoPINN's ``autoencoder.`` (tests/converters/pytorch/test_layout.py checks they agree).
LIGHTNING_PREFIX = LIGHTNING_AUTOENCODER_PREFIX  # one definition, in ptycho_bridge/spec/mapping.py

# The four torch config dicts, in the order upstream writes them into ``torch_scaling_metadata.pt``
# (our writer keeps that order so the metadata's key order matches upstream's).
TORCH_CONFIG_KEYS = ("data_config", "model_config", "training_config", "inference_config")
# The order the reader collects them into ``BridgeArchive.torch_config``: ``model_config`` (the one a
# reader requires) first, then the rest in upstream's order. It is a separate order because that dict
# is printed by inspect and stored in bridge-2 archives, whose bytes must not change.
TORCH_CONFIG_READ_ORDER = ("model_config", *(k for k in TORCH_CONFIG_KEYS if k != "model_config"))

# Training-only parameters of upstream's Unsupervised ``PtychoPINN`` (``[num_datasets]`` each), in
# state_dict order after the autoencoder; forward_predict never reads them (upstream-architecture §3.1).
FORWARD_MODEL_AUX = ("forward_model.alpha", "forward_model.beta", "forward_model.rect_scaler.s1",
                     "forward_model.rect_scaler.s2")

# -- torch-json-1 (newer upstream) ------------------------------------------------------------------
JSON_MANIFEST_MEMBER = "manifest.json"
JSON_MANIFEST_VERSION = "torch-manifest-v1"  # manifest.json's ``manifest_version``
JSON_PARAMS_MEMBER = "params.json"  # ``<model>/params.json``, where torch-bundle-2 has params.dill
JSON_BACKEND = "pytorch"  # manifest.json's ``backend`` (absent means this)

# -- the torch.save zip -----------------------------------------------------------------------------
# Storage data members start on this boundary (torch's own writer pads with extra fields; mmap needs it).
STORAGE_ALIGNMENT = 64
# torch.<Name>Storage -> dtype name (a numpy dtype name, or ``bfloat16``; see safepickle.TORCH_DTYPES).
# The reader accepts every row; the writer derives its inverse below.
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",  # torch itself loads untyped storages as bytes
}
# Storages the writer never emits: bfloat16 (numpy has no such dtype), UntypedStorage (an alias of
# uint8; ByteStorage is what is written) and complex (no upstream state dict holds any; never written).
READ_ONLY_STORAGES = frozenset({"BFloat16Storage", "UntypedStorage", "ComplexFloatStorage", "ComplexDoubleStorage"})
# numpy dtype name -> torch storage class (``torch.<name>``): the inverse of STORAGE_DTYPES for the
# storages the writer emits, the ones ``_rebuild_tensor_v2`` understands.
STORAGE_CLASSES: dict[str, str] = {
    dtype: storage for storage, dtype in STORAGE_DTYPES.items() if storage not in READ_ONLY_STORAGES
}

# -- Lightning .ckpt of upstream torchapi-devel (Ptychodus 1.7) ---------------------------------------
# The two upstream torch networks a checkpoint can hold (../shared/fixtures/ptychodus-torch/README.md):
# upstream main (``use_legacy_decoder_channel_override`` in model_config) and the torchapi-devel branch
# Ptychodus 1.7 loads (exactly the four dataclasses' field sets below).
VARIANT_MAIN = "main"
VARIANT_TORCHAPI = "torchapi-devel"
MAIN_MARKER_FIELD = "use_legacy_decoder_channel_override"
# ``hyper_parameters`` order in torchapi-devel checkpoints (PtychoPINN_Lightning.save_hyperparameters).
TORCHAPI_CONFIG_KEYS = ("model_config", "data_config", "training_config", "inference_config")
# Top-level keys of a Lightning 2.6 checkpoint, in the order Lightning writes them.
CKPT_TOP_LEVEL_ORDER = ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                        "optimizer_states", "lr_schedulers", "hparams_name", "hyper_parameters")
# Written into new checkpoints; Lightning's load_from_checkpoint migrates by it (so it must parse).
LIGHTNING_VERSION = "2.6.6"
# torch.save names its zip folder after the file's stem; this when the stem is not a plain name.
CKPT_ZIP_PREFIX = "archive"
# Training-only parameters of torchapi-devel's Unsupervised model (no rect_scaler, unlike main's).
TORCHAPI_FORWARD_AUX = ("forward_model.alpha", "forward_model.beta")
# model_config.mode values upstream knows.
TORCHAPI_MODES = ("Unsupervised", "Supervised")

# torchapi-devel's four dataclasses: field -> accepted value kinds (as decoded: tuples stay tuples),
# in ``dataclasses.asdict`` order (the writer keeps it). Kinds: see converters.pytorch.torchapi.is_kind.
_F, _I, _B, _S, _N = "float", "int", "bool", "str", "none"
TORCHAPI_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "model_config": {
        "mode": (_S,), "intensity_scale_trainable": (_B,), "intensity_scale": (_F,), "max_position_jitter": (_I,),
        "num_datasets": (_I,), "C_model": (_I,), "n_filters_scale": (_I,), "amp_activation": (_S,),
        "batch_norm": (_B,), "probe_mask": (_N, "array"), "edge_pad": (_I,), "decoder_last_c_outer_fraction": (_F,),
        "decoder_last_amp_channels": (_I,), "use_shared_decoder": (_B,), "eca_encoder": (_B,), "cbam_encoder": (_B,),
        "cbam_bottleneck": (_B,), "cbam_decoder": (_B,), "eca_decoder": (_B,), "spatial_decoder": (_B,),
        "decoder_spatial_kernel": (_I,), "object_big": (_B,), "probe_big": (_B,), "offset": (_I,), "C_forward": (_I,),
        "loss_function": (_S,), "amp_loss": (_N, _S), "phase_loss": (_N, _S), "amp_loss_coeff": (_F,),
        "phase_loss_coeff": (_F,), "probe_reference_coeff": (_F,),
    },
    "data_config": {
        "nphotons": (_F,), "N": (_I,), "C": (_I,), "K": (_I,), "K_quadrant": (_I,), "n_subsample": (_I,),
        "grid_size": ("pair_int",), "neighbor_function": (_S,), "min_neighbor_distance": (_F,),
        "max_neighbor_distance": (_F,), "scan_pattern": (_S,), "normalize": (_S,), "probe_scale": (_F,),
        "probe_normalize": (_B,), "probe_ramp_removal": (_B,), "data_scaling": (_S,), "phase_subtraction": (_B,),
        "x_bounds": ("pair_float",), "y_bounds": ("pair_float",),
    },
    "training_config": {
        "training_directories": ("list_str",), "nll": (_B,), "device": (_S,), "strategy": (_N, _S),
        "n_devices": (_I,), "framework": (_S,), "orchestrator": (_S,), "learning_rate": (_F,), "epochs": (_I,),
        "batch_size": (_I,), "epochs_fine_tune": (_I,), "fine_tune_gamma": (_F,), "scheduler": (_S,),
        "num_workers": (_I,), "accum_steps": (_I,), "gradient_clip_val": (_N, _F), "warmup_epochs": (_I,),
        "min_lr_ratio": (_F,), "experiment_name": (_S,), "notes": (_S,), "model_name": (_S,),
        "enable_staged_finetuning": (_B,), "finetune_stage1_epochs": (_I,), "finetune_stage2_epochs": (_I,),
        "finetune_stage3_epochs": (_I,), "finetune_stage1_lr_decoder": (_F,), "finetune_stage2_lr_encoder_top": (_F,),
        "finetune_stage2_lr_decoder": (_F,), "finetune_stage2_lr_phase_head": (_F,),
        "finetune_stage3_lr_encoder_bottom": (_F,), "finetune_stage3_lr_encoder_top": (_F,),
        "finetune_stage3_lr_decoder": (_F,), "finetune_stage3_lr_phase_head": (_F,), "finetune_skip_stage3": (_B,),
        "finetune_early_stop_patience": (_I,), "finetune_val_split": (_F,),
    },
    "inference_config": {
        "middle_trim": (_I,), "batch_size": (_I,), "experiment_number": (_I,), "pad_eval": (_B,), "window": (_I,),
        "patch_weighting": (_S,),
    },
}
# model_config fields that decide the graph or the state_dict key set (errors, not warnings).
TORCHAPI_NETWORK_FIELDS: dict[str, tuple[str, ...]] = {
    "model_config": ("mode", "intensity_scale_trainable", "num_datasets", "C_model", "n_filters_scale",
                     "amp_activation", "batch_norm", "decoder_last_c_outer_fraction", "decoder_last_amp_channels",
                     "use_shared_decoder", "eca_encoder", "cbam_encoder", "cbam_bottleneck", "cbam_decoder",
                     "eca_decoder", "spatial_decoder", "object_big", "probe_big", "C_forward"),
    "data_config": ("N", "C", "grid_size"),
}

# Every field's value as Ptychodus 1.7 trained the fixture (the dataclass defaults, except what its
# training script set: device='cpu', orchestrator='Lightning', epochs=1). The writer starts from this,
# takes same-named fields of the source's configs, then overwrites every network field from the spec.
TORCHAPI_TEMPLATE: dict[str, dict[str, Any]] = {
    "model_config": {
        "mode": "Unsupervised", "intensity_scale_trainable": False, "intensity_scale": 10000.0,
        "max_position_jitter": 10, "num_datasets": 1, "C_model": 1, "n_filters_scale": 1, "amp_activation": "silu",
        "batch_norm": False, "probe_mask": None, "edge_pad": 10, "decoder_last_c_outer_fraction": 0.125,
        "decoder_last_amp_channels": 1, "use_shared_decoder": False, "eca_encoder": False, "cbam_encoder": True,
        "cbam_bottleneck": False, "cbam_decoder": False, "eca_decoder": False, "spatial_decoder": False,
        "decoder_spatial_kernel": 7, "object_big": True, "probe_big": True, "offset": 6, "C_forward": 1,
        "loss_function": "Poisson", "amp_loss": None, "phase_loss": None, "amp_loss_coeff": 1.0,
        "phase_loss_coeff": 1.0, "probe_reference_coeff": 0.0,
    },
    "data_config": {
        "nphotons": 100000.0, "N": 64, "C": 1, "K": 6, "K_quadrant": 30, "n_subsample": 7, "grid_size": (1, 1),
        "neighbor_function": "Nearest", "min_neighbor_distance": 0.0, "max_neighbor_distance": 3.0,
        "scan_pattern": "Isotropic", "normalize": "Batch", "probe_scale": 1.0, "probe_normalize": True,
        "probe_ramp_removal": False, "data_scaling": "Parseval", "phase_subtraction": True, "x_bounds": (0.1, 0.9),
        "y_bounds": (0.1, 0.9),
    },
    "training_config": {
        "training_directories": [], "nll": True, "device": "cpu", "strategy": "ddp", "n_devices": 1,
        "framework": "Lightning", "orchestrator": "Lightning", "learning_rate": 0.001, "epochs": 1, "batch_size": 16,
        "epochs_fine_tune": 0, "fine_tune_gamma": 0.1, "scheduler": "Default", "num_workers": 4, "accum_steps": 1,
        "gradient_clip_val": None, "warmup_epochs": 5, "min_lr_ratio": 0.1, "experiment_name": "Synthetic_Runs",
        "notes": "", "model_name": "PtychoPINNv2", "enable_staged_finetuning": False, "finetune_stage1_epochs": 7,
        "finetune_stage2_epochs": 7, "finetune_stage3_epochs": 5, "finetune_stage1_lr_decoder": 0.1,
        "finetune_stage2_lr_encoder_top": 0.01, "finetune_stage2_lr_decoder": 0.05,
        "finetune_stage2_lr_phase_head": 0.1, "finetune_stage3_lr_encoder_bottom": 0.005,
        "finetune_stage3_lr_encoder_top": 0.01, "finetune_stage3_lr_decoder": 0.02,
        "finetune_stage3_lr_phase_head": 0.05, "finetune_skip_stage3": True, "finetune_early_stop_patience": 3,
        "finetune_val_split": 0.05,
    },
    "inference_config": {
        "middle_trim": 32, "batch_size": 1000, "experiment_number": 0, "pad_eval": True, "window": 20,
        "patch_weighting": "probe",
    },
}

__all__ = [
    "CKPT_TOP_LEVEL_ORDER",
    "CKPT_ZIP_PREFIX",
    "LIGHTNING_VERSION",
    "MAIN_MARKER_FIELD",
    "TORCHAPI_CONFIG_KEYS",
    "TORCHAPI_FIELDS",
    "TORCHAPI_FORWARD_AUX",
    "TORCHAPI_MODES",
    "TORCHAPI_NETWORK_FIELDS",
    "TORCHAPI_TEMPLATE",
    "VARIANT_MAIN",
    "VARIANT_TORCHAPI",
    "FORWARD_MODEL_AUX",
    "JSON_BACKEND",
    "JSON_MANIFEST_MEMBER",
    "JSON_MANIFEST_VERSION",
    "JSON_PARAMS_MEMBER",
    "LIGHTNING_PREFIX",
    "METADATA_MEMBER",
    "METADATA_SCHEMA",
    "READ_ONLY_STORAGES",
    "SENTINEL_KEY",
    "STORAGE_ALIGNMENT",
    "STORAGE_CLASSES",
    "STORAGE_DTYPES",
    "TORCH_CONFIG_KEYS",
    "TORCH_CONFIG_READ_ORDER",
    "TORCH_MODELS",
    "TORCH_VERSION",
]
