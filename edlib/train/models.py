"""Loading a Stable Diffusion model for training, and the two encoders the loop calls.

A model is a hub id, a local diffusers folder, or a single ``.safetensors``/``.ckpt`` file in
the original SD layout; all three go through diffusers' own pipeline loaders, so what trains
is exactly what diffusers (and the sampler) would load. The training noise scheduler is always
a ``DDPMScheduler`` built from the model's scheduler config: the config carries the beta
schedule and prediction type, while the sampling scheduler class (PNDM, DDIM, ...) does not
matter for adding noise.

``vae_scale_factor`` is read from the VAE config (``2 ** (len(block_out_channels) - 1)``: 8 for
SD's VAE, 4 for the tiny test VAE), never assumed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ATTENTION = ("sdpa", "xformers")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class ModelError(ValueError):
    """The model cannot be loaded; the message names what was given and what is wrong."""


@dataclass
class Models:
    """The pieces of an SD model the trainer works with."""

    tokenizer: object  # transformers CLIPTokenizer
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    vae: torch.nn.Module  # diffusers AutoencoderKL
    unet: torch.nn.Module  # diffusers UNet2DConditionModel
    noise_scheduler: object  # diffusers DDPMScheduler, used to add noise and build targets
    vae_scale_factor: int  # pixels per latent pixel along each side
    vae_scaling_factor: float  # latents are multiplied by this so they have about unit variance
    prediction_type: str  # "epsilon" or "v_prediction"
    source: str  # what was loaded: hub id, folder or file


def _looks_like_path(model: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that reads like a path is one."""
    return (
        model.startswith((".", "/", "~", "\\"))
        or "\\" in model
        or model.count("/") > 1
        or model.lower().endswith(SINGLE_FILE_SUFFIXES)
        or Path(model).expanduser().exists()
    )


def _load_pipeline(model: str, dtype: torch.dtype, single_file_config: str | None):
    from diffusers import StableDiffusionPipeline

    no_safety = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if not _looks_like_path(model):
        try:
            return StableDiffusionPipeline.from_pretrained(model, dtype=dtype, **no_safety)
        except OSError as error:
            raise ModelError(
                f"model: could not load {model!r} from the Hugging Face hub ({error}). If this machine is "
                f"offline, download the model first (huggingface-cli download {model}) or set model to a "
                "local diffusers folder or .safetensors file."
            ) from error

    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(f"model: {path} does not exist (expected a diffusers folder or a .safetensors/.ckpt file)")
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelError(f"model: {path} is a folder but not a diffusers model (no model_index.json in it)")
        if "text_encoder_2" in json.loads(index.read_text(encoding="utf-8")):
            raise ModelError(f"model: {path} is an SDXL model; SDXL is not supported yet (SD1.x and SD2.x are)")
        return StableDiffusionPipeline.from_pretrained(path, dtype=dtype, **no_safety)
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise ModelError(f"model: {path} is not a model file (expected .safetensors or .ckpt, or a diffusers folder)")
    try:
        return StableDiffusionPipeline.from_single_file(
            str(path), config=single_file_config, dtype=dtype, safety_checker=None
        )
    except Exception as error:  # diffusers raises many types here; all mean "this file did not load"
        raise ModelError(f"model: could not load the single file {path}: {error}") from error


def _set_attention(models: Models, attention: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    if attention not in ATTENTION:
        raise ModelError(f"attention: unknown value {attention!r}; allowed: {', '.join(ATTENTION)}")
    if attention == "sdpa":
        # diffusers' default on torch 2, set explicitly so a model saved with another
        # processor still trains with PyTorch's fused scaled_dot_product_attention.
        models.unet.set_attn_processor(AttnProcessor2_0())
        models.vae.set_attn_processor(AttnProcessor2_0())
        return
    if importlib.util.find_spec("xformers") is None:
        raise ModelError("attention: xformers is not installed (pip install xformers), or use attention: sdpa")
    try:
        models.unet.enable_xformers_memory_efficient_attention()
        models.vae.enable_xformers_memory_efficient_attention()
    except (ValueError, RuntimeError) as error:  # e.g. no CUDA device
        raise ModelError(f"attention: xformers cannot be used here ({error}); use attention: sdpa") from error


def load_models(
    model: str | Path,
    *,
    prediction_type: str | None = None,
    zero_terminal_snr: bool = False,
    dtype: torch.dtype = torch.float32,
    attention: str = "sdpa",
    single_file_config: str | None = None,
) -> Models:
    """Load tokenizer, text encoder, VAE and UNet, and build the training noise scheduler.

    ``prediction_type`` None takes the model's own (from its scheduler config); "epsilon" or
    "v_prediction" overrides it. ``zero_terminal_snr`` rescales the betas so the last timestep
    is pure noise; a model whose scheduler config has ``rescale_betas_zero_snr`` gets that
    schedule whatever ``zero_terminal_snr`` says. ``single_file_config`` is a hub id or local diffusers folder describing a
    single file's architecture; without it diffusers infers the architecture from the file's
    keys (which needs the hub, or its cache, once).
    """
    from diffusers import DDPMScheduler

    source = str(model)
    pipeline = _load_pipeline(source, dtype, single_file_config)
    scheduler_config = pipeline.scheduler.config
    prediction_type = prediction_type or scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ModelError(f"prediction_type: {prediction_type!r} is not supported; allowed: epsilon, v_prediction")
    if zero_terminal_snr and prediction_type == "epsilon":
        log.warning(
            "zero_terminal_snr with epsilon prediction: at the last timestep the input is pure noise and "
            "the target is that noise, so the model learns nothing there; use prediction_type v_prediction"
        )
    # A model sampled with a zero-terminal-SNR schedule (its scheduler config says so) was
    # trained on it and must go on training on it: passing False here would silently train
    # it on the plain schedule, at whose last timestep x_T still shows the image's mean
    # colour, so the model learns to read colours from the noise instead of the prompt.
    zero_terminal_snr = zero_terminal_snr or bool(scheduler_config.get("rescale_betas_zero_snr", False))
    noise_scheduler = DDPMScheduler.from_config(
        scheduler_config, prediction_type=prediction_type, rescale_betas_zero_snr=zero_terminal_snr
    )
    models = Models(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        vae=pipeline.vae,
        unet=pipeline.unet,
        noise_scheduler=noise_scheduler,
        vae_scale_factor=2 ** (len(pipeline.vae.config.block_out_channels) - 1),
        vae_scaling_factor=float(pipeline.vae.config.scaling_factor),
        prediction_type=prediction_type,
        source=source,
    )
    _set_attention(models, attention)
    return models


def enable_gradient_checkpointing(models: Models, *, text_encoder: bool) -> None:
    """Trade compute for memory: recompute activations in the backward pass of the UNet, and
    of the text encoder when it trains (a frozen one keeps no activations anyway)."""
    models.unet.enable_gradient_checkpointing()
    if text_encoder:
        # Non-reentrant checkpointing also works when the inputs (token embeddings) do not
        # require grad, and is what PyTorch recommends. transformers 5 renamed the switch.
        encoder = models.text_encoder
        if hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable({"use_reentrant": False})
        else:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def tokenize(models: Models, captions: list[str]) -> torch.Tensor:
    """Token ids, padded and truncated to the tokenizer's 77 positions (BOS and EOS included)."""
    tokenizer = models.tokenizer
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_prompts(models: Models, captions: list[str], clip_skip: int = 1) -> torch.Tensor:
    """Text embeddings ``[batch, 77, hidden]`` conditioning the UNet.

    ``clip_skip`` counts layers from the end as AUTOMATIC1111 and kohya do: 1 is the last
    layer's output (SD's default), 2 the penultimate layer's; the final layer norm is applied
    in every case, as those tools do. (diffusers' pipeline argument ``clip_skip`` counts
    skipped layers, so its value is ours minus one.) Gradients flow when the text encoder
    trains; wrap the call in ``torch.no_grad()`` when it is frozen.
    """
    encoder = models.text_encoder
    layers = encoder.config.num_hidden_layers
    if not 1 <= clip_skip <= layers:
        raise ValueError(
            f"clip_skip: {clip_skip} is out of range for a text encoder with {layers} layers (1..{layers})"
        )
    ids = tokenize(models, captions).to(encoder.device)
    if clip_skip == 1:
        return encoder(ids).last_hidden_state
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
    # transformers 4 nests the layers under `text_model`; transformers 5 does not.
    final_layer_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return final_layer_norm(hidden)


@torch.no_grad()
def encode_images(models: Models, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents for images ``[batch, 3, H, W]`` in [-1, 1], scaled by the VAE's scaling factor.

    Without a generator the posterior mean is used: deterministic, so cached and uncached
    latents are identical and a resumed run sees the same latents. SD's VAE posterior is so
    narrow that a sample differs from the mean by a tiny fraction of the latent's scale; pass
    a generator to draw a sample instead (as diffusers' training scripts do). The VAE never
    trains, so no gradient is kept.
    """
    vae = models.vae
    posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = posterior.mean if generator is None else posterior.sample(generator)
    return latents * models.vae_scaling_factor
