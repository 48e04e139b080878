"""SD3/SD3.5 and FLUX.1 in the `Models` bundle: loading, and the transformer's prediction.

Both are trained by (rectified) flow matching: a sample at noise level sigma in [0, 1] is
``x_t = (1 - sigma) * x0 + sigma * noise`` and the model predicts the velocity
``noise - x0`` (SD3 paper, Esser et al. 2024; diffusers' ``train_dreambooth_lora_flux.py`` and
``train_dreambooth_lora_sd3.py``, kohya's sd-scripts). `predict_velocity` takes latents in the
VAE's layout ``(B, C, h, w)`` and sigmas ``(B,)`` for both families, and hides what differs:

- **FLUX.1** folds 2x2 latent patches into channels (``(B, h/2 * w/2, 4C)``, diffusers'
  ``FluxPipeline._pack_latents``), gives each patch its position as an image id
  ``[0, row, col]`` and every text token the id ``[0, 0, 0]``, takes the timestep as sigma
  (its forward multiplies by 1000) and, for dev (``guidance_embeds``), a guidance value: the
  trainers that train dev well feed 1.0 (see `edlib.model.flow_config`). Its output is
  unpacked to ``(B, C, h, w)``.
- **SD3/SD3.5** patchify inside the model and take the timestep as ``1000 * sigma``.

The bundle's noise scheduler is the model's own ``FlowMatchEulerDiscreteScheduler``: it is what
sampling uses; training draws sigmas itself (`edlib.train.flow`).
"""

from __future__ import annotations

import logging

import torch

from edlib.model.bundle import Conditioning, ModelError, Models
from edlib.model.flow_config import default_sequence_length

log = logging.getLogger(__name__)


def flow_models(
    family: str, pipeline, source: str, prediction_type: str | None, zero_terminal_snr: bool, max_sequence_length: int | None
) -> Models:
    """The `Models` bundle of a loaded ``StableDiffusion3Pipeline`` or ``FluxPipeline``."""
    if prediction_type not in (None, "flow"):
        raise ModelError(
            f"prediction_type: {prediction_type!r} does not apply to {family.upper()} models, which are trained by "
            "flow matching (velocity); leave prediction_type unset"
        )
    if zero_terminal_snr:
        raise ModelError(f"zero_terminal_snr: {family.upper()} models reach pure noise at sigma 1 already; set it to false")
    vae = pipeline.vae
    transformer = pipeline.transformer
    guidance = bool(getattr(transformer.config, "guidance_embeds", False))
    length = max_sequence_length or default_sequence_length(family, guidance)
    if not 1 <= length <= 512:
        raise ModelError(f"max_sequence_length: {length} is out of range (1..512 T5 tokens)")
    third = {"tokenizer_3": pipeline.tokenizer_3, "text_encoder_3": pipeline.text_encoder_3} if family == "sd3" else {}
    return Models(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        tokenizer_2=pipeline.tokenizer_2,
        text_encoder_2=pipeline.text_encoder_2,
        vae=vae,
        unet=transformer,
        noise_scheduler=pipeline.scheduler,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        vae_scaling_factor=float(vae.config.scaling_factor),
        vae_shift_factor=float(vae.config.shift_factor or 0.0),
        prediction_type="flow",
        source=source,
        family=family,
        max_sequence_length=length,
        **third,
    )


# The repositories diffusers reads a single file's configs from, as its single-file loader picks them.
SINGLE_FILE_REPOS = {
    ("flux", True): "black-forest-labs/FLUX.1-dev",
    ("flux", False): "black-forest-labs/FLUX.1-schnell",
    ("sd3", True): "stabilityai/stable-diffusion-3.5-large",
    ("sd3", False): "stabilityai/stable-diffusion-3.5-medium",
}


def flow_single_file_pipeline(path, family: str, config: str | None, dtype: torch.dtype):
    """The pipeline of an SD3 or FLUX single file. Such files hold the transformer (BFL's
    flux1-dev.safetensors nothing else; Stability's SD3.5 files no text encoders), so the
    transformer is read from the file by diffusers' single-file loader and every other component
    comes from ``config``: a diffusers folder or hub id of the same model (default: the official
    repository of the family, dev or schnell, Large or Medium, told from the file's keys)."""
    import diffusers
    from safetensors import safe_open

    from edlib.model.identify import PIPELINES

    with safe_open(str(path), framework="numpy") as handle:
        keys = list(handle.keys())
    if config is None:
        marker = any("guidance_in." in k for k in keys) if family == "flux" else any("joint_blocks.37." in k for k in keys)
        config = SINGLE_FILE_REPOS[(family, marker)]
    model_class = diffusers.FluxTransformer2DModel if family == "flux" else diffusers.SD3Transformer2DModel
    try:
        transformer = model_class.from_single_file(str(path), config=config, subfolder="transformer", dtype=dtype)
        return getattr(diffusers, PIPELINES[family]).from_pretrained(config, transformer=transformer, dtype=dtype)
    except OSError as error:
        raise ModelError(
            f"model: {path} holds a {family.upper()} transformer; its text encoders and VAE come from {config!r}, which "
            f"could not be read ({str(error).splitlines()[0][:200]}). Give a diffusers folder of the same model "
            "(single_file_config in Python, --config for edlib sample), or download that repository first."
        ) from error


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h/2 * w/2, 4C)``: each 2x2 patch becomes one token, its four
    pixels' channels side by side (channel-major), row by row, as FLUX.1 was trained."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"FLUX latents need an even height and width, got {h}x{w} (buckets must be multiples of 16 px)")
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack_latents` for latents of ``height`` x ``width``."""
    b, _, channels = tokens.shape
    patches = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, channels // 4, height, width)


def image_ids(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(h/2 * w/2, 3)`` position ids of the packed patches: ``[0, row, col]``, in the order
    `pack_latents` lays them out (rotary position embeddings read rows and columns)."""
    rows = torch.arange(height // 2, device=device).repeat_interleave(width // 2)
    cols = torch.arange(width // 2, device=device).repeat(height // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).to(dtype)


def predict_velocity(
    models: Models, noisy: torch.Tensor, sigmas: torch.Tensor, cond: Conditioning, guidance: float | None = None
) -> torch.Tensor:
    """The transformer's velocity prediction ``(B, C, h, w)`` for noisy latents at ``sigmas``
    ``(B,)`` (see the module docstring). ``guidance``: FLUX.1-dev's guidance embedding value
    (ignored by models without the embedder; required by those with it)."""
    transformer = models.unet
    dtype = noisy.dtype
    if models.family == "sd3":
        return transformer(
            hidden_states=noisy,
            encoder_hidden_states=cond.hidden.to(dtype),
            pooled_projections=cond.pooled.to(dtype),
            timestep=sigmas * 1000,
            return_dict=False,
        )[0]
    b, _, h, w = noisy.shape
    embeds = _unwrapped(transformer).config.guidance_embeds
    if embeds and guidance is None:
        raise ValueError("FLUX.1-dev needs a guidance value (its guidance embedder); training feeds 1.0 by default")
    prediction = transformer(
        hidden_states=pack_latents(noisy),
        encoder_hidden_states=cond.hidden.to(dtype),
        pooled_projections=cond.pooled.to(dtype),
        timestep=sigmas,
        guidance=torch.full((b,), float(guidance), device=noisy.device) if embeds else None,
        img_ids=image_ids(h, w, noisy.device, dtype),
        txt_ids=torch.zeros(cond.hidden.shape[1], 3, device=noisy.device, dtype=dtype),
        return_dict=False,
    )[0]
    return unpack_latents(prediction, h, w)


def _unwrapped(module):
    """The model inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers, for its config."""
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or module._orig_mod
    return module
