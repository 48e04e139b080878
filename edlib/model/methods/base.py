"""The interface of a training method: what trains, with which learning rates, and what a
checkpoint holds.

The loop knows nothing about full fine-tuning, LoRA or textual inversion; it asks its
`Method`. A new method subclasses `Method` in its own module and is added to the registry
(`edlib.model.methods.METHODS`); the loop, resume, schedules and sampling stay as they are.

A method works on the `Models` bundle of `edlib.model.models` (tokenizer, text_encoder,
vae, unet, ...): `setup` freezes and unfreezes (or adds adapters), `trainable_modules`
names the modules the loop puts in train mode and hands to accelerate, `param_groups` feeds
the optimizer, and `checkpoint_weights` / `load_weights` define the safetensors files of a
checkpoint (full modules here; only adapter or embedding weights for the small methods).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Method(ABC):
    """The interface the loop uses. Subclasses define what trains; the rest follows."""

    name = "method"

    def __init__(self, config):
        self.config = config

    @abstractmethod
    def trainable_module_names(self, models) -> set[str]:
        """`Models` attribute names of the modules holding trainable parameters."""

    @abstractmethod
    def setup(self, models) -> None:
        """Freeze everything, then unfreeze (or add) what this method trains."""

    @abstractmethod
    def param_groups(self, models) -> list[dict[str, Any]]:
        """Optimizer parameter groups, each with its own `lr` and a `name` for logs."""

    def trainable_modules(self, models) -> dict[str, torch.nn.Module]:
        return {name: getattr(models, name) for name in sorted(self.trainable_module_names(models))}

    def text_encoder_lrs(self, models) -> dict[str, float]:
        """The model's text encoders that train, with their learning rates: `text_encoder_lr`
        for the first (SD1.x/SD2.x and FLUX have only it to train), `text_encoder_2_lr` for
        SDXL's and SD3's second (null: the same). 0 keeps an encoder frozen and out of the dict;
        T5 (SD3, FLUX) is never trained."""
        second = self.config.text_encoder_2_lr
        lrs = {"text_encoder": self.config.text_encoder_lr, "text_encoder_2": self.config.text_encoder_lr if second is None else second}
        return {name: lrs[name] for name in models.trainable_text_encoder_names if lrs[name] > 0}

    def trainable_parameters(self, models) -> list[torch.nn.Parameter]:
        return [p for group in self.param_groups(models) for p in group["params"]]

    def prepare_captions(self, captions: list[str]) -> list[str]:
        """Captions as the text encoder should see them (textual inversion spells out a
        multi-vector placeholder); unchanged by default."""
        return captions

    def text_encoder_trains(self, models) -> bool:
        """Whether text embeddings change during training (if not, they may be cached)."""
        return any(name in self.trainable_module_names(models) for name in models.text_encoder_names)

    def checkpoint_weights(self, models, unwrap=lambda m: m) -> dict[str, dict[str, torch.Tensor]]:
        """File name (without .safetensors) -> tensors saved in a checkpoint. `unwrap`
        strips accelerate's wrappers (DDP, compile) so keys are the plain module's."""
        return {name: unwrap(module).state_dict() for name, module in self.trainable_modules(models).items()}

    def load_weights(self, models, weights: dict[str, dict[str, torch.Tensor]], unwrap=lambda m: m) -> None:
        """Load what `checkpoint_weights` saved; a missing or extra file is an error."""
        modules = self.trainable_modules(models)
        if set(weights) != set(modules):
            raise ValueError(
                f"checkpoint holds weights for {sorted(weights)} but method {self.name!r} trains "
                f"{sorted(modules)}: was it saved with another method or text_encoder_lr (0 or not)?"
            )
        for name, module in modules.items():
            unwrap(module).load_state_dict(weights[name], strict=True)

    def init_weights(self, models, weights: dict[str, dict[str, torch.Tensor]], unwrap=lambda m: m) -> None:
        """Start a new phase (`init_from`) from a parent run's checkpoint weights. By
        default exactly what a resume loads; methods may accept more (see FullFineTune)."""
        self.load_weights(models, weights, unwrap)
