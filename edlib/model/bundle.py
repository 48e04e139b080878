"""The `Models` bundle and the `Conditioning` the encoders give: what `edlib.model.models`
loads and the loop, sampling and export work with. Apart from `models.py` so the
per-family modules (`flow`, `flow_text`) use them without an import cycle; `models` re-exports
all of it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from edlib.model.identify import FLOW_FAMILIES
from edlib.model.transfer import upload, uploading

# Each family's text encoders, as `Models` attribute names in the order their outputs join.
TEXT_ENCODERS = {
    "sd": ("text_encoder",),
    "sdxl": ("text_encoder", "text_encoder_2"),
    "sd3": ("text_encoder", "text_encoder_2", "text_encoder_3"),
    "flux": ("text_encoder", "text_encoder_2"),
}
# The T5 encoder of the flow families: frozen always (diffusers' and most trainers' choice: it
# is 4.7B parameters, and its embeddings are what they were trained on), so cacheable.
T5_ENCODER = {"sd3": "text_encoder_3", "flux": "text_encoder_2"}


class ModelError(ValueError):
    """The model cannot be loaded; the message names what was given and what is wrong."""


@dataclass
class Models:
    """The pieces of a model the trainer works with."""

    tokenizer: object  # transformers CLIPTokenizer
    text_encoder: torch.nn.Module  # transformers CLIPTextModel (SD3: CLIPTextModelWithProjection)
    vae: torch.nn.Module  # diffusers AutoencoderKL
    unet: torch.nn.Module  # the denoiser: UNet2DConditionModel, or SD3's/FLUX's transformer
    noise_scheduler: object  # DDPMScheduler (noise and targets), or the flow families' own scheduler
    vae_scale_factor: int  # pixels per latent pixel along each side
    vae_scaling_factor: float  # latents are multiplied by this so they have about unit variance
    prediction_type: str  # "epsilon", "v_prediction", or "flow" (the velocity noise - latents)
    source: str  # what was loaded: hub id, folder or file
    tokenizer_2: object | None = None  # SDXL's/SD3's second CLIP tokenizer; FLUX's T5 tokenizer
    text_encoder_2: torch.nn.Module | None = None  # SDXL/SD3: CLIPTextModelWithProjection; FLUX: T5
    family: str = ""  # "sd", "sdxl", "sd3" or "flux" (`edlib.model.identify.FAMILIES`); "" is told from the encoders
    tokenizer_3: object | None = None  # SD3's T5 tokenizer
    text_encoder_3: torch.nn.Module | None = None  # SD3's T5EncoderModel
    vae_shift_factor: float = 0.0  # SD3/FLUX: latents are (x - shift) * scale
    max_sequence_length: int | None = None  # T5 tokens of a prompt (SD3/FLUX; `edlib.model.flow_config`)

    def __post_init__(self):
        if not self.family:  # a bundle built by hand, as before families: SD or SDXL
            self.family = "sdxl" if self.text_encoder_2 is not None else "sd"

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def flow_matching(self) -> bool:
        """SD3/FLUX: trained by flow matching (velocity target, sigma in [0, 1])."""
        return self.family in FLOW_FAMILIES

    @property
    def text_encoder_names(self) -> tuple[str, ...]:
        """`Models` attribute names of the text encoders, in the order their outputs join."""
        return tuple(name for name in TEXT_ENCODERS[self.family] if getattr(self, name) is not None)

    @property
    def trainable_text_encoder_names(self) -> tuple[str, ...]:
        """The text encoders a method may train: all but a flow family's T5."""
        return tuple(name for name in self.text_encoder_names if name != T5_ENCODER.get(self.family))

    @property
    def module_names(self) -> tuple[str, ...]:
        """Every neural network of the model: the text encoder(s), the VAE and the UNet."""
        return (*self.text_encoder_names, "vae", "unet")


@dataclass
class Conditioning:
    """What conditions the UNet besides the noisy latents and the timestep: the text
    encoders' hidden states ``(B, 77, D)`` and, for SDXL, the second encoder's projected
    pooled embedding ``(B, P)`` and the micro-conditioning ``(B, 6)``: original height and
    width, crop top and left, target height and width, in pixels."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def __getitem__(self, index) -> Conditioning:
        return Conditioning(*(None if t is None else t[index] for t in (self.hidden, self.pooled, self.time_ids)))

    @staticmethod
    def stack(parts: list[Conditioning]) -> Conditioning:
        """One batch from single samples (each indexed out of a batch, as the cache keeps them)."""
        def joined(name):
            values = [getattr(part, name) for part in parts]
            return None if values[0] is None else torch.stack(values)

        return Conditioning(joined("hidden"), joined("pooled"), joined("time_ids"))

    def to(self, *args, **kwargs) -> Conditioning:
        return Conditioning(*(None if t is None else t.to(*args, **kwargs) for t in (self.hidden, self.pooled, self.time_ids)))

    def with_time_ids(self, time_ids: torch.Tensor) -> Conditioning:
        return replace(self, time_ids=time_ids.to(self.hidden.device))


def tokenize(tokenizer, captions: list[str], device: torch.device | str, length: int | None = None) -> torch.Tensor:
    """Token ids on `device` (uploaded without blocking: see `edlib.model.transfer`), padded
    and truncated to `length` positions, BOS and EOS included (default: the tokenizer's own,
    77 for CLIP; T5's is a setting)."""
    with uploading():
        ids = tokenizer(
            captions, padding="max_length", max_length=length or tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return upload(ids, device)
