"""What a run trained, loaded back: the base model with a checkpoint's weights on top.

Sampling after training and exporting both start here, so they see exactly the weights the
loop saved, whatever the method (full modules, LoRA adapters or new embedding rows): the
run's own config (saved in every checkpoint) names the base model and the method, and the
method knows how to put its checkpoint files back (`Method.setup` + `Method.load_weights`,
the same calls resume uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.model.config import TrainConfig
from edlib.model.ema import load_ema_weights
from edlib.model.methods import Method, make_method
from edlib.model.models import Models, load_models


@dataclass
class TrainedModel:
    checkpoint: Path
    step: int
    config: TrainConfig
    models: Models
    method: Method


def load_trained(run_or_checkpoint: str | Path, *, dtype: torch.dtype = torch.float32, ema: bool = True) -> TrainedModel:
    """A run folder (its newest complete checkpoint) or one `checkpoints/step-NNNNNN`. A run
    with EMA (`ema_decay`) gives its EMA weights, as its samples during training showed,
    unless `ema` is False (the raw training weights)."""
    checkpoint = load_checkpoint(resolve_checkpoint(Path(run_or_checkpoint)))
    config = TrainConfig.from_dict(checkpoint.state["config"])
    models = load_models(
        config.model,
        prediction_type=config.prediction_type,
        zero_terminal_snr=config.zero_terminal_snr,
        dtype=dtype,
        vae=config.vae,
        max_sequence_length=config.max_sequence_length,
    )
    method = make_method(config)
    method.setup(models)
    method.load_weights(models, checkpoint.weights)
    if ema and checkpoint.state.get("ema") is not None:
        load_ema_weights(method.trainable_parameters(models), checkpoint.state["ema"], str(checkpoint.path))
    for name in models.module_names:
        getattr(models, name).requires_grad_(False).eval()
    return TrainedModel(checkpoint.path, checkpoint.step, config, models, method)
