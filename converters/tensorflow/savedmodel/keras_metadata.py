"""``keras_metadata.pb``: the Keras 2 model config and the per-layer checkpoint prefixes.

Why: Keras 2 moved every object's metadata out of ``saved_model.pb`` into this ``SavedMetadata``
message (shared/fixtures/upstream-savedmodel/FORMAT.md §4-5): node ``root`` (``_tf_keras_network``) holds the whole Functional config,
and each layer node's ``node_path`` (``root.layer-J`` / ``root.layer_with_weights-K``) is the prefix
its variables get in the checkpoint. Reading both lets the reader confirm that the K-th weighted
layer of the config is the layer whose variables sit under ``layer_with_weights-K``.
"""

from __future__ import annotations

import re
from typing import Any

from converters.tensorflow.savedmodel import protowire
from converters.tensorflow.savedmodel.keras2_config import Keras2Model
from ptycho_bridge.errors import ArchiveLimitError, FormatError, SpecError

MAX_METADATA_PB = 64 * 1024 * 1024
MAX_ROOT_JSON = 32 * 1024 * 1024
MAX_NODE_JSON = 1024 * 1024
MAX_NODES = 100_000
LAYER_PATH = re.compile(r"root\.(layer|layer_with_weights)-(\d+)")


def read_metadata(data: bytes, *, member: str) -> tuple[dict[str, Any], list[Any]]:
    """(root config JSON, nodes) after checking the root node's identity."""
    meta = protowire.parse("SavedMetadata", data, member=member, max_bytes=MAX_METADATA_PB)
    if not meta.nodes or len(meta.nodes) > MAX_NODES:
        raise ArchiveLimitError(f"{len(meta.nodes)} metadata nodes (1..{MAX_NODES})", member=member, field="nodes")
    root = meta.nodes[0]
    if root.node_id != 0 or root.node_path != "root" or root.identifier != "_tf_keras_network":
        raise FormatError(f"first node is {root.node_path!r}/{root.identifier!r}, expected root/_tf_keras_network",
                           member=member, field="nodes[0]")
    if root.version.min_consumer > 2:
        raise FormatError(f"metadata needs a Keras consumer >= {root.version.min_consumer}", member=member,
                           field="nodes[0].version")
    config = protowire.load_json(root.metadata, member=member, field="nodes[0].metadata", max_bytes=MAX_ROOT_JSON)
    return config, list(meta.nodes)


def cross_check_nodes(nodes: list[Any], model: Keras2Model, *, member: str) -> int:
    """Every layer node's name/class must match the config at that position; returns nodes checked."""
    seen: set[str] = set()
    checked = 0
    for i, node in enumerate(nodes[1:], start=1):
        m = LAYER_PATH.fullmatch(node.node_path)
        if not m:
            continue
        idx = int(m.group(2))
        if m.group(1) == "layer":
            layer = model.layers[idx] if idx < len(model.layers) else None
            if layer is not None and layer.weight_index is not None:
                layer = None  # a weighted layer must be listed under its layer_with_weights name
        else:
            weighted = model.weighted
            layer = weighted[idx] if idx < len(weighted) else None
        where = f"nodes[{i}] {node.node_path}"
        if layer is None:
            raise SpecError("no layer of the config has this checkpoint prefix", member=member, field=where)
        info = protowire.load_json(node.metadata, member=member, field=f"{where}.metadata", max_bytes=MAX_NODE_JSON)
        got = (info.get("name"), info.get("class_name")) if isinstance(info, dict) else (None, None)
        if got != (layer.name, layer.class_name):
            raise SpecError(f"metadata says {got}, config layer {layer.index} is {(layer.name, layer.class_name)}",
                             member=member, field=where)
        if layer.name in seen:
            raise SpecError(f"layer {layer.name!r} listed twice", member=member, field=where)
        seen.add(layer.name)
        checked += 1
    missing = [layer.name for layer in model.layers if layer.name not in seen]
    if missing:
        raise SpecError(f"layers without a metadata node: {missing[:5]}", member=member, field="nodes")
    return checked
