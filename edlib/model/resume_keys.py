"""Which config keys may change when a run resumes, and why the others may not."""

from __future__ import annotations

from typing import Any

from edlib.model.config import TrainConfig

# Keys that may not change when a run resumes, and why. Changing any of them would make the
# checkpoint's state meaningless or the continued run silently different from the one started;
# a deliberate change of these is a new phase (`init_from`), not a resume. All other keys may
# change on resume (the change is logged), e.g. max_steps, save cadence, caching, logging.
RESUME_IMMUTABLE_KEYS: dict[str, str] = {
    "model": "the checkpoint's weights are a fine-tune of this base model",
    "method": "the checkpoint holds this method's state (full weights, adapters or embeddings)",
    "init_from": "the run's chain of phases is fixed when it starts",
    "resolution": "images are already assigned to buckets for this resolution in the current epoch",
    "batch_size": "the position in the epoch is counted in batches of this size",
    "gradient_accumulation_steps": "the optimizer step count and LR schedule position depend on it",
    "seed": "the per-epoch schedules and the RNG streams restored from the checkpoint derive from it",
    "unet_lr": "the LR scheduler state restored from the checkpoint holds the base learning rates",
    "text_encoder_lr": "it decides what trains (0 = frozen) and the optimizer's parameter groups",
    "text_encoder_2_lr": "it decides what trains (0 = frozen) and the optimizer's parameter groups",
    "vae": "the cached latents and the UNet's training target come from this VAE",
    "lr_scheduler": "the restored LR scheduler state belongs to this schedule",
    "lr_warmup_steps": "it shapes the LR schedule the run is following",
    "lr_num_cycles": "it shapes the LR schedule the run is following",
    "lr_power": "it shapes the LR schedule the run is following",
    "optimizer": "the optimizer state in the checkpoint belongs to this optimizer",
    "optimizer_args": "the restored optimizer state carries these hyperparameters",
    "ema_decay": "the checkpoint holds (or lacks) EMA weights for this setting",
    "stochastic_rounding": "with full_bf16 it picks the optimizer implementation whose state the checkpoint holds",
    "full_bf16": "the checkpoint's weights and optimizer state are in this precision; changing it rounds them or trains on from rounded values",
    "prediction_type": "the model is being trained towards this target",
    "zero_terminal_snr": "the model is being trained on this noise schedule",
    "clip_skip": "the UNet is being trained on embeddings from this text encoder layer",
    "network_dim": "the checkpoint's LoRA adapters have this rank",
    "network_alpha": "the LoRA adapters are being trained at this scale",
    "conv_dim": "the checkpoint's LoCon adapters have this rank (or there are none)",
    "conv_alpha": "the LoCon adapters are being trained at this scale",
    "placeholder_tokens": "the checkpoint holds embeddings for these tokens",
    "hypernetwork_layer_structure": "the checkpoint's hypernetwork has layers of these sizes",
    "hypernetwork_activation_func": "the hypernetwork is being trained with this activation",
    "hypernetwork_weight_initialization": "the hypernetwork started from this initialisation",
    "hypernetwork_is_layer_norm": "the checkpoint's hypernetwork has (or lacks) these layer norms",
    "hypernetwork_dropout_structure": "the hypernetwork is being trained with this dropout",
    "hypernetwork_activate_output": "the hypernetwork is being trained with (or without) this last activation",
    "validation_fraction": "it decides which images train; the epoch being resumed was planned without the held-out ones",
    "timestep_sampling": "the model is being trained on this distribution of noise levels",
    "logit_mean": "the model is being trained on this distribution of noise levels",
    "logit_std": "the model is being trained on this distribution of noise levels",
    "sigmoid_scale": "the model is being trained on this distribution of noise levels",
    "timestep_shift": "the model is being trained on this distribution of noise levels",
    "flow_target": "the model is being trained towards this target",
    "flux_guidance": "FLUX.1-dev is being trained with this guidance value",
    "max_sequence_length": "the transformer is being trained on prompts of this many T5 tokens",
    "lora_targets": "the checkpoint's LoRA adapters sit on these layers",
    "loraplus_lr_ratio": "it shapes the optimizer's parameter groups and their learning rates",
    "fp8_base": "the adapters are being trained against base weights stored in this precision",
}


def diff_configs(old: TrainConfig, new: TrainConfig) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """Changes between a run's config and the config it is resumed with, as
    `(immutable_changes, mutable_changes)`, each `{key: (old_value, new_value)}`."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    immutable = {key: change for key, change in changed.items() if key in RESUME_IMMUTABLE_KEYS}
    mutable = {key: change for key, change in changed.items() if key not in RESUME_IMMUTABLE_KEYS}
    return immutable, mutable
