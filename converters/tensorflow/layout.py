"""Every fact of the ``tf-modelmanager-1`` layout, defined once for the reader and the writer.

Why: upstream's TF ``ModelManager.save_multiple_models`` fixes member names, versions, the Keras
weight-file group layout and the ``params.cfg`` defaults its loader falls back on. The reader
(:mod:`converters.tensorflow.read`), the writers (:mod:`converters.tensorflow.write`,
:mod:`converters.tensorflow.keras_config`) and the conversion planner (:mod:`ptycho_bridge.ops.convert`)
must agree on every one of them, so each is stated here and nowhere else
(``../shared/docs/upstream-formats.md`` §2).

Archive layout: root ``manifest.dill`` ``{'models': [...], 'version': '1.0'}``; per listed model
``<model>/params.dill`` (the whole ``params.cfg``), ``<model>/custom_objects.dill`` (by-reference
classes), ``<model>/model.keras`` (a Keras 3 zip of ``metadata.json``, ``config.json`` and
``model.weights.h5``) and ``<model>/model.h5`` (one ``intensity_scale`` attribute).
"""

from __future__ import annotations

from typing import Any, Mapping

from ptycho_bridge.formats.legacy import LEGACY_MANIFEST
from ptycho_bridge.spec.network import tf_padded_size

# -- members -------------------------------------------------------------------------------------------
MANIFEST_MEMBER = LEGACY_MANIFEST  # the root manifest both backends share (formats/legacy.py)
PARAMS_MEMBER = "params.dill"  # per model: <model>/params.dill
CUSTOM_OBJECTS_MEMBER = "custom_objects.dill"
KERAS_MEMBER = "model.keras"
MODEL_H5_MEMBER = "model.h5"
# inside model.keras, in the order Keras writes them
KERAS_METADATA = "metadata.json"
KERAS_CONFIG = "config.json"
KERAS_WEIGHTS = "model.weights.h5"

# -- versions and encodings ------------------------------------------------------------------------------
MANIFEST_VERSION = "1.0"  # manifest.dill 'version'
MAX_PIXELS = 1 << 16  # bound for params.dill pixel counts (offset, max_position_jitter)
PARAMS_VERSION = "1.0"  # params.dill '_version' as upstream's saver sets it
KERAS_VERSION = "3.15.1"  # what upstream's CI installs and what wrote the fixtures
PICKLE_PROTOCOL = 4  # upstream's dill default; the fixtures' .dill members are protocol 4
SUPPORTED_MODELS = ("diffraction_to_obj",)  # the models this project writes (see write.py)
KERAS_DATE_FORMAT = "%Y-%m-%d@%H:%M:%S"  # metadata.json 'date_saved'
# Members Keras writes with ``zf.open(..., 'w')`` (metadata.json, config.json) carry this zip timestamp;
# model.weights.h5 carries the save time.
KERAS_ZIP_FIXED_DATE = (1980, 1, 1, 0, 0, 0)

# -- size bounds ------------------------------------------------------------------------------------------
MAX_KERAS_CONFIG = 16 * 1024 * 1024  # declared bound of config.json (JSON members are read under base.MAX_JSON_BYTES)
MAX_MODEL_H5 = 1024 * 1024  # model.h5 holds one attribute

# -- model.h5 and model.weights.h5 ----------------------------------------------------------------------
MODEL_H5_SCALE_ATTR = "intensity_scale"  # model.h5's one root attribute (float64)
OPTIMIZER_GROUP = "optimizer"  # training state in model.weights.h5 (never needed for inference)
CONV_VARS = (("0", "weight"), ("1", "bias"))  # dataset name in a Conv2D's vars group → canonical parameter
# Keras ops (``keras.src.ops.*`` entries of config.layers) are not Layers: no weight group, no alias.
KERAS_OP_MODULE_PREFIX = "keras.src.ops."
# Layers owning sub-layers that get their own weight-file group: class → ((attribute, class), ...).
# The sub-layer's name is a Keras auto-name counted over the instances in construction order.
WEIGHT_SUBLAYERS: dict[str, tuple[tuple[str, str], ...]] = {"CenterMaskLayer": (("zero_pad", "ZeroPadding2D"),)}


VARS = "vars"  # every layer's (and the model's own) variables group


def layer_group(alias: str) -> str:
    """``model.weights.h5`` group of the layer Keras aliases ``alias`` (``conv2d_3`` → ``layers/conv2d_3``)."""
    return f"layers/{alias}"


def vars_group(alias: str) -> str:
    """The group holding that layer's variables (``layers/<alias>/vars``)."""
    return f"{layer_group(alias)}/{VARS}"


def model_member(model: str, name: str) -> str:
    """Archive path of a per-model member (``model_member('diffraction_to_obj', PARAMS_MEMBER)``)."""
    return f"{model}/{name}"


def manifest_dict(models: list[str]) -> dict[str, Any]:
    """The ``manifest.dill`` dict for ``models`` (the reader reports the same dict back)."""
    return {"models": list(models), "version": MANIFEST_VERSION}


# -- params.cfg -------------------------------------------------------------------------------------------
# ``params.DEFAULT_CFG`` values upstream's TF loader falls back on when params.dill lacks the key.
TF_DEFAULT_OFFSET = 4
TF_DEFAULT_JITTER = 10


def default_padded_size(N: int, gridsize: int, params: Mapping[str, Any]) -> int:
    """``params.get_padded_size()`` upstream: ``N + (g-1)·offset + max_position_jitter``, absent keys at their defaults."""
    offset = params.get("offset", TF_DEFAULT_OFFSET)
    jitter = params.get("max_position_jitter", TF_DEFAULT_JITTER)
    return tf_padded_size(N, gridsize, int(offset), int(jitter))
