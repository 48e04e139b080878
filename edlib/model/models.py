"""Loading a Stable Diffusion, SD3 or FLUX model for training, and the encoders the loop calls.

A model is a hub id, a local diffusers folder, or a single ``.safetensors``/``.ckpt`` file in
the original SD layout; all three go through diffusers' own pipeline loaders, so what trains
is exactly what diffusers (and the sampler) would load. The training noise scheduler is always
a ``DDPMScheduler`` built from the model's scheduler config: the config carries the beta
schedule and prediction type, while the sampling scheduler class (PNDM, DDIM, ...) does not
matter for adding noise.

SDXL models (a ``text_encoder_2`` in the pipeline) load through ``StableDiffusionXLPipeline``
into the same ``Models`` bundle, with ``tokenizer_2``/``text_encoder_2`` set; everything that
differs between the families is in the text conditioning (`encode_prompts` returns a
`Conditioning` with SDXL's pooled embedding, and the batch adds its micro-conditioning), so the
loop calls `predict` the same way for both.

Every model has a *family* (`edlib.model.identify.FAMILIES`: "sd", "sdxl", "sd3", "flux"),
told from its model_index.json or file header before anything loads; loading, the text
conditioning and the prediction dispatch on it. SD3/SD3.5 and FLUX.1 load through
``StableDiffusion3Pipeline`` and ``FluxPipeline`` into the same bundle: their transformer sits
where the UNet does (``unet``: the denoiser of every family), their T5 encoder is
``text_encoder_3`` (SD3) or ``text_encoder_2`` (FLUX, as diffusers names it), and the noise
scheduler is their own ``FlowMatchEulerDiscreteScheduler`` (flow matching trains without a
DDPM schedule; see `edlib.model.flow`). Their VAEs normalise latents with a shift as well as a
scale (``vae_shift_factor``).

``vae_scale_factor`` is read from the VAE config (``2 ** (len(block_out_channels) - 1)``: 8 for
SD's VAE, 4 for the tiny test VAE), never assumed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from edlib.model.bundle import (  # noqa: F401 - defined there for edlib.model.flow; part of this module's API
    T5_ENCODER,
    TEXT_ENCODERS,
    Conditioning,
    ModelError,
    Models,
    tokenize,
)
from edlib.model.identify import (  # noqa: F401 - native_resolution: part of this module's API
    FLOW_FAMILIES,
    PIPELINES,
    SINGLE_FILE_SUFFIXES,
    file_family,
    folder_family,
    hub_family,
    looks_like_path,
    model_location,
    native_resolution,
)

log = logging.getLogger(__name__)

ATTENTION = ("sdpa", "xformers")


def predict(unet, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The UNet's prediction for noisy latents at the timesteps: SD1.x/SD2.x take the text
    hidden states alone; SDXL adds the pooled embedding and micro-conditioning to the time
    embedding (diffusers' ``added_cond_kwargs``)."""
    if cond.pooled is None:
        return unet(noisy, timesteps, cond.hidden).sample
    if cond.time_ids is None:
        raise ValueError("SDXL needs micro-conditioning (original size, crop, target size) for every sample")
    added = {"text_embeds": cond.pooled, "time_ids": cond.time_ids.to(cond.pooled.dtype)}
    return unet(noisy, timesteps, cond.hidden, added_cond_kwargs=added).sample


def pipeline_class(family: bool | str):
    """diffusers' pipeline class of a family (True/False: SDXL or SD, as callers once asked)."""
    import diffusers

    if isinstance(family, bool):
        family = "sdxl" if family else "sd"
    return getattr(diffusers, PIPELINES[family])


def pipeline_options(family: str) -> dict:
    """Loading options: SD pipelines come without their safety checker (training and samples
    need none); the other families have none."""
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} if family == "sd" else {}


def _load_pipeline(model: str, dtype: torch.dtype, single_file_config: str | None):
    if not looks_like_path(model):
        try:
            family = hub_family(model)
            return family, pipeline_class(family).from_pretrained(model, dtype=dtype, **pipeline_options(family))
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
        family = folder_family(path)
        return family, pipeline_class(family).from_pretrained(path, dtype=dtype, **pipeline_options(family))
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise ModelError(f"model: {path} is not a model file (expected .safetensors or .ckpt, or a diffusers folder)")
    try:
        family = file_family(path)
        if family in FLOW_FAMILIES:
            from edlib.model.flow import flow_single_file_pipeline

            return family, flow_single_file_pipeline(path, family, single_file_config, dtype)
        options = {"safety_checker": None} if family == "sd" else {}
        return family, pipeline_class(family).from_single_file(str(path), config=single_file_config, dtype=dtype, **options)
    except ModelError:
        raise
    except Exception as error:  # diffusers raises many types here; all mean "this file did not load"
        raise ModelError(f"model: could not load the single file {path}: {error}") from error


def _load_vae(vae: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    path = Path(vae).expanduser()
    if looks_like_path(vae) and not (path / "config.json").is_file():
        raise ModelError(f"vae: {path} is not a diffusers VAE folder (no config.json in it)")
    try:
        return AutoencoderKL.from_pretrained(str(path) if looks_like_path(vae) else vae, dtype=dtype)
    except OSError as error:
        raise ModelError(f"vae: could not load {vae!r} ({error})") from error


def _set_attention(models: Models, attention: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    if attention not in ATTENTION:
        raise ModelError(f"attention: unknown value {attention!r}; allowed: {', '.join(ATTENTION)}")
    if attention == "sdpa":
        if models.flow_matching:  # their attention processors are SDPA already, and their own classes
            return
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
    vae: str | None = None,
    max_sequence_length: int | None = None,
) -> Models:
    """Load tokenizer, text encoder, VAE and UNet, and build the training noise scheduler.

    ``prediction_type`` None takes the model's own (from its scheduler config); "epsilon" or
    "v_prediction" overrides it. ``zero_terminal_snr`` rescales the betas so the last timestep
    is pure noise; a model whose scheduler config has ``rescale_betas_zero_snr`` gets that
    schedule whatever ``zero_terminal_snr`` says. ``single_file_config`` is a hub id or local diffusers folder describing a
    single file's architecture; without it diffusers infers the architecture from the file's
    keys (which needs the hub, or its cache, once). ``vae`` replaces the model's VAE (a hub id
    or a diffusers VAE folder), e.g. with an fp16-safe one. ``max_sequence_length``: T5
    tokens per prompt of SD3/FLUX (None: the family's default, `edlib.model.flow_config`).
    """
    source = model_location(model)
    family, pipeline = _load_pipeline(source, dtype, single_file_config)
    if vae is not None:
        pipeline.vae = _load_vae(vae, dtype)
    if family in FLOW_FAMILIES:
        from edlib.model.flow import flow_models

        models = flow_models(family, pipeline, source, prediction_type, zero_terminal_snr, max_sequence_length)
        _set_attention(models, attention)
        return models
    return _unet_models(family, pipeline, source, prediction_type, zero_terminal_snr, attention)


def _unet_models(family: str, pipeline, source: str, prediction_type, zero_terminal_snr: bool, attention: str) -> Models:
    from diffusers import DDPMScheduler

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
        tokenizer_2=getattr(pipeline, "tokenizer_2", None),
        text_encoder_2=getattr(pipeline, "text_encoder_2", None),
        vae=pipeline.vae,
        unet=pipeline.unet,
        noise_scheduler=noise_scheduler,
        vae_scale_factor=2 ** (len(pipeline.vae.config.block_out_channels) - 1),
        vae_scaling_factor=float(pipeline.vae.config.scaling_factor),
        prediction_type=prediction_type,
        source=source,
        family=family,
    )
    _set_attention(models, attention)
    return models


def enable_gradient_checkpointing(models: Models, *, text_encoders: tuple[str, ...] = ()) -> None:
    """Trade compute for memory: recompute activations in the backward pass of the UNet, and
    of the text encoders named (those that train: a frozen one keeps no activations anyway)."""
    models.unet.enable_gradient_checkpointing()
    for name in text_encoders:
        # Non-reentrant checkpointing also works when the inputs (token embeddings) do not
        # require grad, and is what PyTorch recommends. transformers 5 renamed the switch.
        encoder = getattr(models, name)
        if hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable({"use_reentrant": False})
        else:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _check_clip_skip(encoder, clip_skip: int, extra: int = 0) -> None:
    layers = encoder.config.num_hidden_layers
    if not 1 <= clip_skip <= layers - extra:
        raise ValueError(
            f"clip_skip: {clip_skip} is out of range for a text encoder with {layers} layers (1..{layers - extra})"
        )


def encode_prompts(models: Models, captions: list[str], clip_skip: int = 1) -> Conditioning:
    """The text conditioning of captions: hidden states ``[batch, 77, hidden]`` (and SDXL's
    pooled embedding).

    ``clip_skip`` counts layers from the end as AUTOMATIC1111 and kohya do: 1 is the last
    layer's output (SD's default), 2 the penultimate layer's; the final layer norm is applied
    in every case, as those tools do. (diffusers' pipeline argument ``clip_skip`` counts
    skipped layers, so its value is ours minus one.) SDXL reads both encoders one layer
    deeper, without the final layer norm, and joins them along the feature axis, as SDXL was
    trained and as diffusers' pipeline does: ``clip_skip`` 1 is that standard, 2 one layer
    deeper still. Gradients flow when a text encoder trains; wrap the call in
    ``torch.no_grad()`` when they are frozen.
    """
    if models.flow_matching:
        from edlib.model.flow_text import encode_flow_prompts

        return encode_flow_prompts(models, captions, clip_skip)
    if models.is_sdxl:
        return _encode_sdxl(models, captions, clip_skip)
    return Conditioning(encode_sd_prompts(models.tokenizer, models.text_encoder, captions, clip_skip))


def encode_sd_prompts(tokenizer, encoder, captions: list[str], clip_skip: int = 1) -> torch.Tensor:
    """SD1.x/SD2.x hidden states of one text encoder (see `encode_prompts`)."""
    _check_clip_skip(encoder, clip_skip)
    ids = tokenize(tokenizer, captions, encoder.device)
    if clip_skip == 1:
        return encoder(ids).last_hidden_state
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
    # transformers 4 nests the layers under `text_model`; transformers 5 does not (diffusers'
    # own SD pipeline still reaches for `text_model`, and fails there with clip_skip).
    final_layer_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return final_layer_norm(hidden)


def _encode_sdxl(models: Models, captions: list[str], clip_skip: int) -> Conditioning:
    hidden, outputs = [], []
    for tokenizer, encoder in ((models.tokenizer, models.text_encoder), (models.tokenizer_2, models.text_encoder_2)):
        _check_clip_skip(encoder, clip_skip, extra=1)
        outputs.append(encoder(tokenize(tokenizer, captions, encoder.device), output_hidden_states=True))
        hidden.append(outputs[-1].hidden_states[-(clip_skip + 1)])
    pooled = outputs[1].text_embeds  # the second encoder's, projected: only it conditions SDXL
    # The encoders may sit in different dtypes (one training, one frozen in half precision).
    dtype = torch.promote_types(hidden[0].dtype, hidden[1].dtype)
    return Conditioning(torch.cat([h.to(dtype) for h in hidden], dim=-1), pooled)


@torch.no_grad()
def encode_images(models: Models, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents for images ``[batch, 3, H, W]`` in [-1, 1], scaled by the VAE's scaling factor
    (after subtracting its shift factor: SD3's and FLUX's VAEs have one).

    Without a generator the posterior mean is used: deterministic, so cached and uncached
    latents are identical and a resumed run sees the same latents. SD's VAE posterior is so
    narrow that a sample differs from the mean by a tiny fraction of the latent's scale; pass
    a generator to draw a sample instead (as diffusers' training scripts do). The VAE never
    trains, so no gradient is kept.
    """
    vae = models.vae
    posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = posterior.mean if generator is None else posterior.sample(generator)
    return (latents - models.vae_shift_factor) * models.vae_scaling_factor
