"""Name and layout mappings between canonical tensors and each backend, kept as data.

Why: one table per backend, read by every function that needs it (readers, writers, engines), in
the manner of Hugging Face's TF↔PT name maps. A template holds ``{placeholders}``; matching a
backend name against the backend column yields the placeholder values, which fill the canonical
column (and the reverse). Conv weights are OIHW canonically; TF stores HWIO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ptycho_bridge.lazy import numpy as np

# canonical template → torch state_dict template (below the autoencoder prefix)
TORCH_NAME_TABLE: tuple[tuple[str, str], ...] = (
    ("encoder.{i}.conv{j}.{p}", "encoder.blocks.{i}.conv{j}.{p}"),
    ("encoder.{i}.bn{j}.{p}", "encoder.blocks.{i}.bn{j}.{p}"),
    ("encoder.{i}.cbam.mlp1.{p}", "encoder.blocks.{i}.attention.ChannelGate.mlp.1.{p}"),
    ("encoder.{i}.cbam.mlp2.{p}", "encoder.blocks.{i}.attention.ChannelGate.mlp.3.{p}"),
    ("encoder.{i}.cbam.spatial.weight", "encoder.blocks.{i}.attention.SpatialGate.compress.weight"),
    ("bottleneck.cbam.mlp1.{p}", "bottleneck_cbam.ChannelGate.mlp.1.{p}"),
    ("bottleneck.cbam.mlp2.{p}", "bottleneck_cbam.ChannelGate.mlp.3.{p}"),
    ("bottleneck.cbam.spatial.weight", "bottleneck_cbam.SpatialGate.compress.weight"),
    ("amp.decoder.{d}.conv{j}.{p}", "decoder_amp.blocks.{d}.conv{j}.{p}"),
    ("amp.decoder.{d}.bn{j}.{p}", "decoder_amp.blocks.{d}.bn{j}.{p}"),
    ("amp.outer.conv{j}.{p}", "decoder_amp.amp.conv_up_block.conv{j}.{p}"),
    ("amp.outer.bn{j}.{p}", "decoder_amp.amp.conv_up_block.bn{j}.{p}"),
    ("amp.conv{j}.{p}", "decoder_amp.amp.conv{j}.{p}"),
    ("amp.bn{j}.{p}", "decoder_amp.amp.bn{j}.{p}"),
    ("phase.decoder.{d}.conv{j}.{p}", "decoder_phase.blocks.{d}.conv{j}.{p}"),
    ("phase.decoder.{d}.bn{j}.{p}", "decoder_phase.blocks.{d}.bn{j}.{p}"),
    ("phase.outer.conv{j}.{p}", "decoder_phase.phase.conv_up_block.conv{j}.{p}"),
    ("phase.outer.bn{j}.{p}", "decoder_phase.phase.conv_up_block.bn{j}.{p}"),
    ("phase.conv{j}.{p}", "decoder_phase.phase.conv{j}.{p}"),
    ("phase.bn{j}.{p}", "decoder_phase.phase.bn{j}.{p}"),
)

# torch state_dict prefixes: Lightning module (``model.autoencoder.``) or a bare PtychoPINN.
LIGHTNING_AUTOENCODER_PREFIX = "model.autoencoder."  # a LightningModule wraps PtychoPINN as .model
TORCH_AUTOENCODER_PREFIXES = (LIGHTNING_AUTOENCODER_PREFIX, "autoencoder.")
# Tensors outside the autoencoder are training-only (forward-model physics, parity scale).
TORCH_AUX_PREFIX = "training."

# TF stores conv kernels HWIO; canonical is OIHW.
TF_KERNEL_TO_CANONICAL = (3, 2, 0, 1)
CANONICAL_TO_TF_KERNEL = (2, 3, 1, 0)

_PLACEHOLDER = re.compile(r"\{(\w)\}")
_PATTERNS = {"p": r"[A-Za-z_]+", "j": r"[12]"}


def _compile(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos : m.start()]))
        key = m.group(1)
        parts.append(f"(?P<{key}>{_PATTERNS.get(key, r'[0-9]+')})")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts) + r"\Z")


@lru_cache(maxsize=None)
def _table(direction: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    if direction == "to_canonical":
        return tuple((_compile(torch), canon) for canon, torch in TORCH_NAME_TABLE)
    return tuple((_compile(canon), torch) for canon, torch in TORCH_NAME_TABLE)


def _translate(name: str, direction: str) -> str | None:
    for pattern, target in _table(direction):
        m = pattern.match(name)
        if m:
            return target.format(**m.groupdict())
    return None


def torch_to_canonical(key: str) -> str:
    """Canonical name of a torch state_dict key; auxiliary keys keep their path under ``training.``."""
    for prefix in TORCH_AUTOENCODER_PREFIXES:
        if key.startswith(prefix):
            name = _translate(key[len(prefix) :], "to_canonical")
            if name is not None:
                return name
            return "extra.autoencoder." + key[len(prefix) :]
    return TORCH_AUX_PREFIX + (key[len("model.") :] if key.startswith("model.") else key)


def canonical_to_torch(name: str, *, prefix: str = LIGHTNING_AUTOENCODER_PREFIX) -> str:
    """Torch state_dict key for a canonical name (inverse of :func:`torch_to_canonical`)."""
    if name.startswith(TORCH_AUX_PREFIX):
        rest = name[len(TORCH_AUX_PREFIX) :]
        return ("model." + rest) if prefix.startswith("model.") else rest
    if name.startswith("extra.autoencoder."):
        return prefix + name[len("extra.autoencoder.") :]
    key = _translate(name, "to_torch")
    if key is None:
        raise KeyError(f"no torch name for canonical tensor {name!r}")
    return prefix + key


def tf_to_canonical_array(name: str, value: np.ndarray) -> np.ndarray:
    """TF (HWIO kernel / bias) → canonical layout."""
    if name.endswith(".weight") and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(TF_KERNEL_TO_CANONICAL))
    return value


def canonical_to_tf_array(name: str, value: np.ndarray) -> np.ndarray:
    """Canonical (OIHW) → TF HWIO kernel; biases unchanged."""
    if name.endswith(".weight") and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(CANONICAL_TO_TF_KERNEL))
    return value


@dataclass(frozen=True)
class TfConvRole:
    """One Conv2D of a Keras graph: its layer name, its weight-file alias, its canonical prefix."""

    layer_name: str
    alias: str
    canonical: str
