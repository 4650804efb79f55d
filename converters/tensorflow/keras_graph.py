"""Understand a Keras 3 ``config.json`` of upstream's TF model without TensorFlow.

Why: the weight file names groups by a positional alias (the k-th Conv2D of ``model.layers`` is
``layers/conv2d_k``), not by layer name, and the layer order interleaves the two heads. Hard-coding
either numbering breaks as soon as N, gridsize, pad_object or probe_big change. We therefore rebuild
the graph from ``inbound_nodes`` and assign each conv its *role* structurally
(``../shared/docs/upstream-architecture.md`` §1.7): shared ancestors of both heads are the encoder; within a
head the ``GetItem`` slices tell the narrow conv from the outer branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ptycho_bridge.errors import SpecError, UnsafeArchiveError
from ptycho_bridge.spec.mapping import TfConvRole


@dataclass(frozen=True)
class KerasGraphInfo:
    """What ``config.json`` says about the network, plus the conv role table."""

    N: int
    channels: int
    n_filters_scale: int
    object_big: bool
    pad_object: bool
    outer_branch: bool
    amp_activation: str
    phase_scale: float
    use_polar: bool
    padded_size: int | None
    convs: tuple[TfConvRole, ...]
    reassembly_centring: bool = True
    outer_mask: bool = True  # the outer branch is multiplied by the border mask (False: upstream before a6e1019)
    layer_classes: tuple[str, ...] = field(default=())
    inputs: tuple[str, ...] = field(default=())
    outputs: tuple[str, ...] = field(default=())
    # (canonical conv prefix, Conv2D ``filters``) for every conv: the widths the archive's network was built with
    conv_filters: tuple[tuple[str, int], ...] = field(default=())

    def head_widths(self, head: str) -> set[int]:
        """Output widths of ``head``'s final convs (``conv1``/``conv2``) as the config builds them."""
        return {f for name, f in self.conv_filters if name in (f"{head}.conv1", f"{head}.conv2")}


def _iter_history(node: Any) -> Iterator[str]:
    """Producer names of every ``__keras_tensor__`` inside an inbound-node structure."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            hist = node.get("config", {}).get("keras_history")
            if isinstance(hist, list) and hist and isinstance(hist[0], str):
                yield hist[0]
            return
        for value in node.values():
            yield from _iter_history(value)
    elif isinstance(node, list):
        for value in node:
            yield from _iter_history(value)


def _slice_of(layer: dict[str, Any]) -> tuple[Any, Any] | None:
    """(start, stop) of a ``GetItem`` channel slice, or None."""
    for node in layer.get("inbound_nodes", []):
        for arg in node.get("args", []):
            if isinstance(arg, list):
                for item in arg:
                    if isinstance(item, dict) and item.get("class_name") == "__slice__":
                        cfg = item.get("config", {})
                        return cfg.get("start"), cfg.get("stop")
    return None


CODE_CLASSES = ("Lambda", "__lambda__", "TFOpLambda")
ALLOWED_MODULES = ("keras", "ptycho")
# The Keras modules whose objects a model config may name: layers, ops used as layers, and the
# objects layers are configured with. Everything else Keras can reach by name (keras.utils.get_file,
# keras.saving, keras.config, ...) is a callable that does work when the config is loaded.
KERAS_OBJECT_MODULES = tuple(
    f"keras.{src}{area}" for src in ("", "src.") for area in (
        "layers", "initializers", "regularizers", "constraints", "activations", "losses", "metrics",
        "optimizers", "models", "ops", "dtype_policies")
)
# Modules whose plain functions may be referenced by name (``class_name: "function"``).
FUNCTION_MODULES = tuple(
    f"keras.{src}{area}" for src in ("", "src.") for area in ("activations", "losses", "metrics")
)
MASK_CLASSES = ("CenterMaskLayer",)  # the layer that builds the border mask 1 − M (SavedModel: re-expressed as one)
MAX_LAYERS = 4096  # layers in one config; upstream's models have ~60


def _module_allowed(module: str, cls: Any, node: dict[str, Any]) -> bool:
    """Whether a config object ``module.cls`` names a layer-like object Keras may deserialise."""
    def within(prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    if cls == "function":  # a callable referenced by name: only activations/losses/metrics
        return within(FUNCTION_MODULES) or (module == "builtins" and isinstance(node.get("config"), str))
    if module == "keras" or module == "ptycho" or module.startswith("ptycho."):
        return True
    return within(KERAS_OBJECT_MODULES)


def refuse_code(config: Any, *, member: str) -> None:
    """Refuse a config that would make Keras run or import code when upstream loads it.

    Why: we never deserialise with Keras, but migrations keep ``model.keras`` for upstream, whose
    loader would. Refused: Lambda layers and marshalled bytecode (``__lambda__``, ``function_type``),
    objects from modules other than ``keras``/``ptycho`` (Keras imports the named module), and every
    non-layer callable inside ``keras`` (``keras.utils.get_file`` is a known safe-mode bypass): only
    the modules in :data:`KERAS_OBJECT_MODULES` may be named, and functions only from
    :data:`FUNCTION_MODULES` or by name from ``builtins`` (as upstream's losses are).
    The walk is iterative: the nesting depth is attacker-controlled.
    """
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        cls, module = node.get("class_name"), node.get("module")
        if cls in CODE_CLASSES or "function_type" in node:
            raise UnsafeArchiveError(f"Keras object {cls!r} carries Python code (Lambda/bytecode); refused", member=member)
        if module is not None and not isinstance(module, str):
            raise UnsafeArchiveError(f"Keras object {cls!r} has a non-string module", member=member)
        if isinstance(module, str) and module.split(".")[0] not in ALLOWED_MODULES and not (
                module == "builtins" and cls == "function" and isinstance(node.get("config"), str)):
            raise UnsafeArchiveError(f"Keras object {module}.{cls} would make Keras import module {module!r}; "
                                     f"only {'/'.join(ALLOWED_MODULES)} objects are allowed", member=member)
        if isinstance(module, str) and not _module_allowed(module, cls, node):
            raise UnsafeArchiveError(f"Keras object {module}.{cls} is not a layer, op or layer setting "
                                     "(a non-layer callable Keras would run on load); refused", member=member)
        stack.extend(node.values())


def analyse_config(config: dict[str, Any], *, member: str) -> KerasGraphInfo:
    """Parse a Functional model config; raise :class:`SpecError` on anything unexpected.

    The config is untrusted JSON: a value of the wrong JSON type anywhere (``None`` where a list is
    expected, a string where a number is) is reported as a malformed config, not as a crash.
    """
    refuse_code(config, member=member)
    try:
        return _analyse(config, member=member)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise SpecError(f"malformed Keras config ({exc.__class__.__name__}: {exc})"[:300], member=member) from None


def _analyse(config: dict[str, Any], *, member: str) -> KerasGraphInfo:

    def fail(msg: str, fieldname: str | None = None) -> SpecError:
        return SpecError(msg, member=member, field=fieldname)

    try:
        inner = config["config"]
        layers = inner["layers"]
    except (KeyError, TypeError):
        raise fail("not a Keras Functional model config (no config.layers)") from None
    if config.get("class_name") != "Functional" or not isinstance(layers, list):
        raise fail(f"expected a Functional model, found {config.get('class_name')!r}", "class_name")
    if len(layers) > MAX_LAYERS:
        raise fail(f"{len(layers)} layers, limit is {MAX_LAYERS}", "config.layers")

    by_name: dict[str, dict[str, Any]] = {}
    parents: dict[str, list[str]] = {}
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise fail("layer entry without a name")
        name = layer["name"]
        if name in by_name:
            raise fail(f"duplicate layer name {name!r}")
        by_name[name] = layer
        parents[name] = list(dict.fromkeys(_iter_history(layer.get("inbound_nodes", []))))
    for name, ps in parents.items():
        for p in ps:
            if p not in by_name:
                raise fail(f"layer {name!r} consumes unknown layer {p!r}")

    def ancestors(name: str) -> set[str]:
        # iterative DFS, O(nodes + edges): configs are attacker-controlled, recursion depth must not depend on them
        seen: set[str] = set()
        stack = list(parents[name])
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            stack.extend(parents[cur])
        return seen

    def descendants(name: str) -> set[str]:
        children: dict[str, list[str]] = {}
        for child, ps in parents.items():
            for p in ps:
                children.setdefault(p, []).append(child)
        seen: set[str] = set()
        stack = list(children.get(name, ()))
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            stack.extend(children.get(cur, ()))
        return seen

    convs = [l["name"] for l in layers if l.get("class_name") == "Conv2D"]
    alias = {n: ("conv2d" if k == 0 else f"conv2d_{k}") for k, n in enumerate(convs)}
    combine = [l for l in layers if l.get("class_name") == "CombineComplexLayer"]
    if len(combine) != 1:
        raise fail(f"expected exactly one CombineComplexLayer, found {len(combine)}", "CombineComplexLayer")
    obj = combine[0]
    heads_in = parents[obj["name"]]
    if len(heads_in) != 2:
        raise fail(f"CombineComplexLayer {obj['name']!r} has {len(heads_in)} inputs, expected 2 (amp, phase)")
    amp_anc = ancestors(heads_in[0]) | {heads_in[0]}
    phase_anc = ancestors(heads_in[1]) | {heads_in[1]}
    encoder = [c for c in convs if c in amp_anc and c in phase_anc]
    roles: list[TfConvRole] = []
    if len(encoder) % 2:
        raise fail(f"odd number of shared encoder convs ({len(encoder)})")
    for k, name in enumerate(encoder):
        roles.append(TfConvRole(name, alias[name], f"encoder.{k // 2}.conv{k % 2 + 1}"))

    head_facts: list[tuple[bool, bool, bool]] = []
    for head, anc, full in (("amp", amp_anc - phase_anc, amp_anc), ("phase", phase_anc - amp_anc, phase_anc)):
        head_convs = [c for c in convs if c in anc]
        getitems = [n for n in anc if by_name[n].get("class_name") == "GetItem"]
        narrow_src = [g for g in getitems if _slice_of(by_name[g]) == (None, -4)]
        outer_src = [g for g in getitems if _slice_of(by_name[g]) == (-4, None)]
        if len(getitems) != len(narrow_src) + len(outer_src):
            raise fail(f"{head} head: unrecognised channel slice (expected [..., :-4] / [..., -4:])")
        narrow = [c for c in head_convs if narrow_src and narrow_src[0] in parents[c]]
        if narrow_src and len(narrow) != 1:
            raise fail(f"{head} head: expected one conv after the [..., :-4] slice, found {len(narrow)}")
        pad_object = bool(getitems)
        if pad_object:
            below = descendants(outer_src[0]) if outer_src else set()  # once per head, not once per conv
            outer = [c for c in head_convs if c in below]
            taken = set(outer) | set(narrow)
            base = [c for c in head_convs if c not in taken]
        else:
            # head = base pairs, then the up-block pair, then conv2 (../shared/docs/upstream-architecture.md §1.7)
            if len(head_convs) < 3:
                raise fail(f"{head} head without slices has only {len(head_convs)} convs")
            base, outer = head_convs[:-3], head_convs[-3:]
        if outer and len(outer) != 3:
            raise fail(f"{head} head: outer branch has {len(outer)} convs, expected 3")
        if len(base) % 2:
            raise fail(f"{head} head: odd number of decoder convs ({len(base)})")
        for k, name in enumerate(base):
            roles.append(TfConvRole(name, alias[name], f"{head}.decoder.{k // 2}.conv{k % 2 + 1}"))
        for name in narrow:
            roles.append(TfConvRole(name, alias[name], f"{head}.conv1"))
        if outer:
            roles.append(TfConvRole(outer[0], alias[outer[0]], f"{head}.outer.conv1"))
            roles.append(TfConvRole(outer[1], alias[outer[1]], f"{head}.outer.conv2"))
            roles.append(TfConvRole(outer[2], alias[outer[2]], f"{head}.conv2"))
        # the outer branch is multiplied by the border mask (CenterMaskLayer) since upstream a6e1019 (2024-08-20)
        masked = any(by_name[n].get("class_name") in MASK_CLASSES for n in full)
        head_facts.append((pad_object, bool(outer), masked or not (pad_object and outer)))
    if head_facts[0] != head_facts[1]:
        raise fail("amp and phase heads have different structures")
    assigned = {r.layer_name for r in roles}
    stray = [c for c in convs if c not in assigned]
    if stray:
        raise fail(f"Conv2D layer(s) {stray} are not part of the diffraction_to_obj network")

    inputs = [l for l in layers if l.get("class_name") == "InputLayer"]
    image_in = next((l for l in inputs if l["name"] == "input"), inputs[0] if inputs else None)
    if image_in is None:
        raise fail("no InputLayer")
    shape = image_in.get("config", {}).get("batch_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and shape[1] == shape[2]):
        raise fail(f"input batch_shape {shape!r} is not [B, N, N, C]", "input.batch_shape")
    N, channels = int(shape[1]), int(shape[3])

    first = by_name[encoder[0]] if encoder else None
    if first is None:
        raise fail("no encoder convolutions")
    filters0 = int(first["config"]["filters"])
    nfs, rem = divmod(filters0 * N, 2048)
    if rem or nfs < 1:
        raise fail(f"first conv has {filters0} filters, not n_filters_scale·2048/N for N={N}", "filters")

    conv_filters = []
    for role in roles:
        filters = by_name[role.layer_name].get("config", {}).get("filters")
        if type(filters) is not int or not 1 <= filters <= 65536:
            raise fail(f"Conv2D {role.layer_name!r} ({role.canonical}) has filters {filters!r}, expected a positive int",
                       "filters")
        conv_filters.append((role.canonical, filters))

    amp_layer = next((l for l in layers if l["name"] == "amp" and l["class_name"] == "ActivationLayer"), None)
    phi_layer = next((l for l in layers if l["name"] == "phi" and l["class_name"] == "ActivationLayer"), None)
    if amp_layer is None or phi_layer is None:
        raise fail("ActivationLayer 'amp'/'phi' not found")
    amp_activation = str(amp_layer["config"].get("activation_name"))
    phase_scale = float(phi_layer["config"].get("scale", 1.0))
    # CombineComplexLayer records ``use_polar`` since upstream fixed its combine (2026-01-26); the layer
    # before that computed tf.complex(amp, phase), i.e. the legacy A + iφ (ptycho_bridge.spec.history)
    use_polar = obj.get("config", {}).get("use_polar", False)
    if not isinstance(use_polar, bool):
        raise fail(f"CombineComplexLayer use_polar is {use_polar!r}, expected true or false", "use_polar")
    reassemble = [l for l in layers if l.get("class_name") == "ReassemblePatchesLayer"]
    pad_rec = [l for l in layers if l.get("class_name") == "PadReconstructionLayer"]
    object_big = bool(reassemble)
    padded = None
    src = (reassemble or pad_rec or [None])[0]
    if src is not None and "padded_size" in src.get("config", {}):
        padded = int(src["config"]["padded_size"])
    # the ReassemblePatchesLayer that records padded_size/N/gridsize centres the offsets on their batch
    # mean (today's); the earlier one (config without them, e.g. upstream cb46e91) translated each patch
    # by its own offset, as the SavedModel era did
    centring = bool(reassemble) and "padded_size" in reassemble[0].get("config", {})

    return KerasGraphInfo(
        N=N,
        channels=channels,
        n_filters_scale=nfs,
        object_big=object_big,
        pad_object=head_facts[0][0],
        outer_branch=head_facts[0][1],
        outer_mask=head_facts[0][2],
        amp_activation=amp_activation,
        phase_scale=phase_scale,
        use_polar=use_polar,
        padded_size=padded,
        convs=tuple(roles),
        reassembly_centring=centring,
        layer_classes=tuple(str(l.get("class_name")) for l in layers),
        inputs=tuple(str(x[0]) for x in inner.get("input_layers", []) if isinstance(x, list) and x),
        outputs=tuple(str(x[0]) for x in inner.get("output_layers", []) if isinstance(x, list) and x),
        conv_filters=tuple(conv_filters),
    )
