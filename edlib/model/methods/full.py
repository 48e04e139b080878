"""Full fine-tuning: every weight of the UNet, and of each text encoder given a rate."""

from __future__ import annotations

from typing import Any

import torch

from edlib.model import optim
from edlib.model.methods.base import Method


class FullFineTune(Method):
    """Full fine-tuning: the whole UNet, and each whole text encoder whose learning rate is
    above 0 (0 keeps it frozen, bit-identical)."""

    name = "full"

    def trainable_module_names(self, models) -> set[str]:
        return {"unet", *self.text_encoder_lrs(models)}

    def setup(self, models) -> None:
        for name in models.module_names:
            getattr(models, name).requires_grad_(name in self.trainable_module_names(models))

    def param_groups(self, models) -> list[dict[str, Any]]:
        return optim.param_groups(models, self.text_encoder_lrs(models), self.config.unet_lr)

    def init_weights(self, models, weights: dict[str, dict[str, torch.Tensor]], unwrap=lambda m: m) -> None:
        """Every module the parent phase saved is loaded, trained in this phase or not: a
        phase may freeze the text encoder the previous one trained, and must keep it."""
        unknown = set(weights) - {"unet", *models.text_encoder_names}
        if unknown or "unet" not in weights:
            raise ValueError(
                f"init_from: the checkpoint holds {sorted(weights)}, not a full fine-tune's unet (and text "
                f"encoders) of this model ({', '.join(('unet', *models.text_encoder_names))})"
            )
        for name, tensors in weights.items():
            unwrap(getattr(models, name)).load_state_dict(tensors, strict=True)
