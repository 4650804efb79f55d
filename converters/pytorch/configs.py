"""The torch configs and ``params.dill`` a writer emits: templates, defaults and the params translation.

Why: upstream torch decides CBAM, batch norm and the ``c_outer`` override from the four config dicts
in ``torch_scaling_metadata.pt``, not from ``params.dill``; a converted archive must carry configs that
rebuild exactly the spec's network (and params that upstream's plain ``load_torch_bundle`` agrees
with). Everything here is plain data and numpy: no torch. Member names, versions and key orders are
in :mod:`converters.pytorch.layout`; :mod:`converters.pytorch.write` assembles the members.
"""

from __future__ import annotations

from typing import Any, Mapping

from ptycho_bridge.lazy import numpy as np

from converters.pytorch.layout import TORCH_CONFIG_KEYS, TORCH_VERSION
from ptycho_bridge.errors import ConversionRefused
from ptycho_bridge.spec.expressible import require
from ptycho_bridge.spec.network import NetworkSpec, torch_legacy_c_outer

# -- configuration templates -----------------------------------------------------------------------
# The field sets (and values) of the four torch config dicts upstream's ``run_cdi_example_torch``
# writes to ``torch_scaling_metadata.pt`` (../shared/docs/upstream-formats.md §3). Every field that decides the
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
SPEC_OWNED = {"intensity_scale", "intensity_scale_trainable", "amp_activation", "object_big", "probe_big",
               "pad_object", "n_filters_scale", "N", "C", "C_model", "C_forward", "grid_size", "batch_norm",
               "cbam_encoder", "cbam_bottleneck", "architecture", "cnn_output_mode", "use_shared_decoder",
               "use_legacy_decoder_channel_override", "decoder_last_c_outer_fraction", "decoder_last_amp_channels"}

# The keys of upstream's torch ``params.dill`` in its order (dataclass_to_legacy_dict of the TF
# TrainingConfig + intensity_scale + _version), with the dataclass defaults for keys a source lacks
# (../shared/docs/upstream-architecture.md §4; None-valued fields are kept, unlike in TF params.dill).
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


def c_outer_override(spec: NetworkSpec) -> dict[str, Any]:
    """The torch model_config fields that give ``spec.c_outer`` latent channels to the outer branch.

    Upstream torch routes ``Cout`` channels by default; any other count needs
    ``use_legacy_decoder_channel_override`` with a fraction ``f`` such that
    ``max(1, int(32·nfs·clamp(f, 0, 0.5))) == c_outer`` (../shared/docs/upstream-architecture.md §2.3, §3.2).
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
                if field_name in params and field_name not in SPEC_OWNED and _compatible(section[field_name], params[field_name]):
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


__all__ = [
    "PARAMS_TO_CONFIG_RENAMES",
    "SPEC_OWNED",
    "TORCH_CONFIG_TEMPLATE",
    "TORCH_PARAMS_DEFAULTS",
    "c_outer_override",
    "check_torch_expressible",
    "torch_config_for",
    "torch_params_dill",
]
