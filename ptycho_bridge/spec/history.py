"""Upstream's network over time: which variant an archive's network is, in words, and its today's-form twin.

Why: a user's archive carries the network of the day it was trained, and upstream's ``ptycho/model.py``
changed shape over time. The readers derive every shape-bearing choice from what the archive stores
(``converters/tensorflow/spec.py``), so the spec *is* the variant; this module only names it
(:func:`variant_notes`, what ``inspect`` prints) and re-expresses it in the form today's upstream builds
(:func:`today_form`), which is what the writers of upstream's legacy members need, because upstream's
loaders rebuild the network from today's code and then load weights into it by shape.

The one variant with a different shape that archives we read carry (``docs/upstream-history.md``):

- **one-channel amplitude head** (upstream before c03673d, 2026-02-10): ``create_decoder_amp`` built its
  heads as ``Conv2D(1)`` at every gridsize while the phase heads had ``gridsize²`` channels with
  ``object.big``; ``obj = amp · exp(i·phase)`` broadcasts the one amplitude over the patches. In the spec:
  ``amp_channels = 1`` with ``channels_out > 1``. Its today's-form twin repeats the amplitude head's output
  channel ``channels_out`` times (the kernels' and biases' output axis): every channel then computes the same
  amplitude, which is exactly the broadcast, so the per-patch object is the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from ptycho_bridge.lazy import numpy as np

from ptycho_bridge.spec.network import NetworkSpec

AMP_HEAD_CHANGE = ("c03673d", "2026-02-10")  # upstream commit and date that widened the amplitude heads
POLAR_FIX_DATE = "2026-01-26"  # upstream fixed CombineComplexLayer to amp·exp(i·phase) (and recorded use_polar)
OUTER_MASK_CHANGE = ("a6e1019", "2024-08-20")  # upstream masked the outer branch to the border from here on
# the convs whose output channels are the amplitude head's (canonical names, OIHW: output axis 0)
AMP_HEAD_CONVS = ("amp.conv1", "amp.conv2")


@dataclass(frozen=True)
class Variant:
    """One way a spec differs from what today's upstream factory builds: machine key and words."""

    key: str
    text: str
    upstream: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "text": self.text, "upstream": self.upstream}


def shares_amp_head(spec: NetworkSpec) -> bool:
    """Whether ``spec``'s amplitude head is narrower than its phase head (broadcast across the patches)."""
    return spec.amp_channels is not None and spec.amp_channels != spec.channels_out


def variant_notes(spec: NetworkSpec, backend: str | None = None, *, reassembly_centring: bool = True) -> list[Variant]:
    """The variants ``spec`` carries, in words (empty: the network is the one today's upstream builds).

    ``reassembly_centring`` is the model's :attr:`~ptycho_bridge.model.ModelEntry.reassembly_centring`.
    """
    out: list[Variant] = []
    if shares_amp_head(spec):
        commit, date = AMP_HEAD_CHANGE
        source = ("upstream torchapi-devel's decoder_last_amp_channels=1" if backend == "pytorch"
                  else f"upstream before {commit}, {date}")
        out.append(Variant(
            "amp_head_shared",
            f"amplitude head: {spec.amp_channels} channel, shared across the {spec.channels_out} patches",
            source))
    if not spec.use_polar:
        out.append(Variant("combine_cartesian", "object = amp + i·phase, not amp·exp(i·phase)",
                           f"upstream's .keras-era CombineComplexLayer before {POLAR_FIX_DATE}"))
    if spec.object_big and not reassembly_centring and backend != "pytorch":
        out.append(Variant("reassembly_uncentred", "reassembly: each patch translated by its own offset (offsets not "
                           "centred on the batch mean)", "upstream's SavedModel era and .keras archives whose "
                           "ReassemblePatchesLayer records no padded_size"))
    if spec.probe_big and spec.pad_object and not spec.outer_mask:
        out.append(Variant("outer_unmasked", "outer (probe.big) branch added over the whole patch, not masked to "
                           "the border", "upstream torchapi-devel (Ptychodus 1.7)" if backend == "pytorch"
                           else f"upstream TF before {OUTER_MASK_CHANGE[0]}, {OUTER_MASK_CHANGE[1]}"))
    return out


def today_form(spec: NetworkSpec, tensors: Mapping[str, np.ndarray]) -> tuple[NetworkSpec, dict[str, np.ndarray], list[str]]:
    """``(spec, tensors, notes)`` of the network today's upstream builds computing the same per-patch object.

    A one-channel amplitude head becomes a ``channels_out``-channel head whose channels are copies of it
    (bit-identical per channel); everything else is returned as given. ``notes`` says what was changed.
    """
    if not shares_amp_head(spec):
        return spec, dict(tensors), []
    assert spec.amp_channels is not None  # shares_amp_head
    reps = spec.channels_out // spec.amp_channels
    out = dict(tensors)
    for prefix in AMP_HEAD_CONVS:
        for part in ("weight", "bias"):
            name = f"{prefix}.{part}"
            if name in out:
                out[name] = np.ascontiguousarray(np.repeat(np.asarray(out[name]), reps, axis=0))
    commit, date = AMP_HEAD_CHANGE
    note = (f"amplitude head widened from {spec.amp_channels} to {spec.channels_out} identical channels "
            f"(today's upstream layout since {commit}, {date}): the same per-patch object")
    return replace(spec, amp_channels=None), out, [note]
