"""Every fact of the PyTorch archive formats, in one place: member names, versions, key orders, dtypes.

Why: the reader (:mod:`converters.pytorch.read`), the writers (:mod:`converters.pytorch.write`,
:mod:`converters.pytorch.configs`) and the ``torch.save`` zip codec (:mod:`converters.pytorch.torchzip`)
must agree on these byte for byte; defined once here, a change to one direction cannot silently miss
the other. Formats: ``torch-bundle-2`` (upstream ``save_torch_bundle``, ../shared/docs/upstream-formats.md §2-§3),
``torch-json-1`` (newer upstream, root ``manifest.json``) and the ``torch.save`` zip inside both.
This module imports only the core's name mapping: it is a leaf, importable from anywhere without an import cycle.
"""

from __future__ import annotations

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

__all__ = [
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
