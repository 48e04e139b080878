"""Starting values that fit the model in hand: the resolution it was made for and learning
rates for its method and size. The training form starts from them (a first run on the toy
world model at SD1.5's 512 px and 1e-6 would learn nothing in the minutes a newcomer gives it).

- **Resolution**: the model's native size (`edlib.model.identify.native_resolution`: 512 for
  SD1.x, 768 for SD2.x 768-v, 1024 for SDXL, SD3.5 and FLUX, 64 for the toy world model), else
  the config's `DEFAULT_RESOLUTION`: `edlib.model.config.resolution_for`, the rule a config
  without `resolution` follows.
- **Learning rates**: `METHOD_LRS` (docs/methods.md) for Stable Diffusion-sized models. A full
  fine-tune of a small model (a denoiser under `SMALL_MODEL_PARAMS`, e.g. the 5M-parameter
  world model) takes `SMALL_FULL_LRS`: the rate `edlib.demo` and notebook 00 fine-tune the world
  model with (in the README's preservation lab 88-97% of "zorblat" prompts draw the new shape
  after 280-520 steps at it). LoRA, textual inversion and hypernetworks keep their rates at every size: no
  measurement here says otherwise.
"""

from __future__ import annotations

from pathlib import Path

from edlib.model.config import DEFAULT_RESOLUTION, resolution_for
from edlib.model.sizes import model_size

# (unet_lr, text_encoder_lr) per method for Stable Diffusion-sized models: a full fine-tune
# at EveryDream's 1e-6 with the text encoder frozen, LoRA adapters at about 100x that, textual
# inversion's new word at the text encoder's rate (docs/methods.md), a hypernetwork at
# AUTOMATIC1111's default rate with the text encoder frozen.
METHOD_LRS = {"full": (1e-6, 0.0), "lora": (1e-4, 0.0), "textual_inversion": (0.0, 5e-3), "hypernetwork": (1e-5, 0.0)}
SMALL_MODEL_PARAMS = 100e6  # SD1.5's UNet has 860M; toy and test models have a few million
SMALL_FULL_LR = 3e-4  # edlib.demo's LEARNING_RATE (it imports this one)
SMALL_FULL_LRS = (SMALL_FULL_LR, SMALL_FULL_LR)  # UNet and text encoder


def suggested_resolution(model: str | Path) -> int:
    """The resolution a first run of `model` should train at (module docstring)."""
    try:
        return resolution_for(model)
    except (OSError, ValueError):
        return DEFAULT_RESOLUTION


def is_small(model: str | Path) -> bool:
    """Whether `model`'s denoiser is known to be toy-sized (False when it cannot be told)."""
    size = model_size(model)
    return size is not None and size.denoiser < SMALL_MODEL_PARAMS


def suggested_learning_rates(method: str, model: str | Path) -> tuple[float, float]:
    """(unet_lr, text_encoder_lr) for a first run of `method` on `model` (module docstring)."""
    if method not in METHOD_LRS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHOD_LRS)}")
    if method == "full" and is_small(model):
        return SMALL_FULL_LRS
    return METHOD_LRS[method]
