"""Generating sample images, during training and after.

Sampling in the middle of a training run must leave the run exactly as it was: the modules'
train/eval modes, their weights (EMA weights are swapped in and out), and every global RNG
stream the trainer draws from (python, numpy, torch, CUDA). Each image draws its noise from its
own CPU generator seeded by the prompt's seed, so an image depends on the prompt and the
weights only: the same seed at two steps shows what training changed, and the same prompt gives
the same image on CPU and GPU up to float rounding.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from edlib.model.ema import ema_weights
from edlib.model.models import encode_sd_prompts
from edlib.sample.grid import make_grid
from edlib.sample.pipeline import denoiser, load_pipeline, pipeline_family, pipeline_from_modules
from edlib.sample.pngmeta import format_parameters, save_png
from edlib.sample.prompts import RANDOM_SEED, PromptSpec
from edlib.sample.samplers import is_flow_schedule, make_scheduler, sampler_for_schedule

logger = logging.getLogger("edlib.sample")

# The CFG scale of prompts that give none: diffusers' pipeline defaults, except FLUX.1-dev,
# whose guidance is embedded (3.5: BFL's and diffusers' examples), schnell, which takes none,
# and SD3.5 (4.5: the SD3.5 Medium model card's example).
DEFAULT_CFG = {"sd": 7.0, "sdxl": 7.0, "sd3": 4.5, "flux": 3.5, "flux-schnell": 0.0}
# Above this many pixels on a side the VAE decodes in tiles and slices: decoding a large image
# at once needs more memory than the UNet steps, and must not need more than training does.
VAE_TILING_ABOVE = 1024
GRID_NAME = "grid.png"


# -- leaving training as it was ------------------------------------------------------------


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore python, numpy, torch and CUDA global RNG states on exit.

    The samplers draw from per-image generators, but library code may still touch a global
    stream; restoring them keeps a run's later batches, noise and dropout exactly as without
    sampling."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def eval_mode(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Put ``modules`` in eval mode, then give every submodule back its own previous mode
    (a training UNet may hold submodules deliberately in eval mode)."""
    previous = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in previous:
            m.training = training


def _ema_parameters(ema, unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The UNet parameters ``ema`` tracks: all of them, or only the trainable ones."""
    count = len(ema.shadow_params)
    everything = list(unet.parameters())
    if len(everything) == count:
        return everything
    trainable = [p for p in everything if p.requires_grad]
    if len(trainable) == count:
        return trainable
    raise ValueError(
        f"the EMA model tracks {count} parameters, but the UNet has {len(everything)} "
        f"({len(trainable)} trainable): it was not made from this UNet"
    )


def _unet_ema_weights(ema, unet: torch.nn.Module):
    """Sample with the EMA weights in the UNet; the training weights are back on exit."""
    return ema_weights(ema, _ema_parameters(ema, unet) if ema is not None else [])


@contextlib.contextmanager
def vae_memory_savers(vae, width: int, height: int) -> Iterator[None]:
    """Tiled and sliced VAE decoding for images larger than `VAE_TILING_ABOVE` on a side;
    the VAE's own settings are back on exit (it may be the training VAE)."""
    large = max(width, height) > VAE_TILING_ABOVE
    previous = (getattr(vae, "use_tiling", False), getattr(vae, "use_slicing", False))
    if large:
        vae.enable_tiling()
        vae.enable_slicing()
    try:
        yield
    finally:
        if large:
            vae.use_tiling, vae.use_slicing = previous


@contextlib.contextmanager
def _swapped_scheduler(pipeline: DiffusionPipeline, scheduler) -> Iterator[None]:
    original = pipeline.scheduler
    pipeline.scheduler = scheduler
    try:
        yield
    finally:
        pipeline.scheduler = original


# -- one image -----------------------------------------------------------------------------


def native_size(pipeline: DiffusionPipeline) -> tuple[int, int]:
    """The (width, height) the model was made for: the UNet's (transformer's) sample size
    times the VAE's downsampling factor (read from the VAE config, never assumed to be 8).
    FLUX's transformer has none: its pipeline's default of 128 latent pixels."""
    factor = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    size = getattr(denoiser(pipeline).config, "sample_size", None) or getattr(pipeline, "default_sample_size", 128)
    height, width = (size, size) if isinstance(size, int) else size
    return width * factor, height * factor


def resolve_spec(spec: PromptSpec, pipeline: DiffusionPipeline) -> PromptSpec:
    """``spec`` with everything decided: the model's size where none was given, a fresh seed
    for seed -1 (drawn from the OS, not from any RNG a training run uses), the sampler's
    canonical name."""
    width, height = native_size(pipeline)
    seed = secrets.randbelow(2**32) if spec.seed == RANDOM_SEED else spec.seed
    return replace(
        spec,
        width=spec.width or width,
        height=spec.height or height,
        seed=seed,
        cfg_scale=DEFAULT_CFG[_cfg_family(pipeline)] if spec.cfg_scale is None else spec.cfg_scale,
        sampler=sampler_for_schedule(spec.sampler, pipeline.scheduler.config),
        clip_skip=spec.clip_skip or getattr(pipeline, "edlib_clip_skip", 1),
    )


def flow_family(pipeline: DiffusionPipeline) -> str | None:
    """"sd3", "flux" or "flux-schnell" for a flow-matching pipeline (their PNG parameters
    differ), else None."""
    return _cfg_family(pipeline) if is_flow_schedule(pipeline.scheduler.config) else None


def _cfg_family(pipeline: DiffusionPipeline) -> str:
    family = pipeline_family(pipeline)
    if family == "flux" and not denoiser(pipeline).config.guidance_embeds:
        return "flux-schnell"
    return family


def generate_image(pipeline: DiffusionPipeline, spec: PromptSpec) -> Image.Image:
    """One image for a resolved ``spec`` (see `resolve_spec`), with its own sampler and noise."""
    scheduler = make_scheduler(spec.sampler, pipeline.scheduler.config, seed=spec.seed)
    generator = torch.Generator("cpu").manual_seed(spec.seed)
    with _swapped_scheduler(pipeline, scheduler), vae_memory_savers(pipeline.vae, spec.width, spec.height):
        output = pipeline(
            **_prompt_arguments(pipeline, spec),
            num_inference_steps=spec.steps,
            guidance_scale=spec.cfg_scale,
            width=spec.width,
            height=spec.height,
            generator=generator,
            output_type="pil",
        )
    return output.images[0]


def _prompt_arguments(pipeline: DiffusionPipeline, spec: PromptSpec) -> dict[str, Any]:
    """The prompt as the pipeline should take it. With a clip_skip above 1, an SD pipeline
    gets its embeddings from `edlib.model.models.encode_sd_prompts`, the function training
    uses (diffusers' own clip_skip path breaks on transformers 5's CLIP); SDXL's pipeline
    reads the layer itself (diffusers counts layers skipped: ours minus one)."""
    prompts = {"prompt": spec.prompt, "negative_prompt": spec.negative_prompt or None}
    family = pipeline_family(pipeline)
    if family in ("sd3", "flux"):
        length = getattr(pipeline, "edlib_max_sequence_length", None)
        prompts.update({"max_sequence_length": length} if length else {})
        if family == "flux":  # CLIP's pooled output only: no layer to choose
            return prompts
    if not spec.clip_skip or spec.clip_skip == 1:
        return prompts
    if hasattr(pipeline, "text_encoder_2"):
        return {**prompts, "clip_skip": spec.clip_skip - 1}
    encoder = pipeline.text_encoder
    # These embeddings skip the pipeline's encode_prompt, and so its spelling out of
    # multi-vector textual-inversion placeholders (`maybe_convert_prompt`): done here.
    texts = [pipeline.maybe_convert_prompt(text, pipeline.tokenizer) for text in (spec.prompt, spec.negative_prompt)]
    embeds = [encode_sd_prompts(pipeline.tokenizer, encoder, [text], spec.clip_skip).to(encoder.dtype) for text in texts]
    return {"prompt_embeds": embeds[0], "negative_prompt_embeds": embeds[1]}


def parameters_text(spec: PromptSpec, model_name: str = "", flow: str | None = None) -> str:
    """The AUTOMATIC1111 "parameters" text of an image made from a resolved ``spec``. For
    SD3/FLUX as Forge writes them: "Schedule type: Simple", and FLUX.1-dev's embedded guidance
    as "Distilled CFG Scale" beside a "CFG scale" of 1 (no negative prompt pass)."""
    extra = {"Clip skip": spec.clip_skip} if spec.clip_skip and spec.clip_skip > 1 else {}
    cfg = spec.cfg_scale
    if flow:
        extra["Schedule type"] = "Simple"
    if flow in ("flux", "flux-schnell"):  # schnell has no guidance to write
        extra.update({"Distilled CFG Scale": f"{spec.cfg_scale:g}"} if flow == "flux" else {})
        cfg = 1.0
    return format_parameters(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        steps=spec.steps,
        sampler=spec.sampler,
        cfg_scale=cfg,
        seed=spec.seed,
        width=spec.width,
        height=spec.height,
        model=model_name,
        # A1111 writes a setting only when it is not the default.
        extra=extra or None,
    )


# -- sampling events -----------------------------------------------------------------------


def _as_pipeline(pipeline_or_components: DiffusionPipeline | Mapping[str, Any]) -> DiffusionPipeline:
    if isinstance(pipeline_or_components, DiffusionPipeline):
        return pipeline_or_components
    if isinstance(pipeline_or_components, Mapping):
        return pipeline_from_modules(**pipeline_or_components)
    raise TypeError(
        "sample_images: expected a diffusers pipeline or a mapping of unet, vae, text_encoder, "
        f"tokenizer, scheduler_config (and optional ema), got {type(pipeline_or_components).__name__}"
    )


def _generate_all(
    pipeline: DiffusionPipeline,
    prompts: Sequence[PromptSpec],
    autocast_dtype: torch.dtype | None,
    on_image: Callable[[int, int], None] | None = None,
) -> list[tuple[PromptSpec, Image.Image]]:
    """Images for ``prompts`` with training left untouched (modes, weights, RNG states);
    ``on_image(done, total)`` after each image."""
    modules = [c for c in pipeline.components.values() if isinstance(c, torch.nn.Module)]
    device_type = pipeline.device.type
    autocast_dtype = autocast_dtype or getattr(pipeline, "edlib_autocast_dtype", None)  # a run's own (pipeline_from_checkpoint)
    results = []
    with (
        preserved_rng_state(),
        eval_mode(modules),
        _unet_ema_weights(getattr(pipeline, "edlib_ema", None), denoiser(pipeline)),
        torch.no_grad(),
        torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
    ):
        for spec in prompts:
            spec = resolve_spec(spec, pipeline)
            results.append((spec, generate_image(pipeline, spec)))
            if on_image is not None:
                on_image(len(results), len(prompts))
    if device_type == "cuda":
        torch.cuda.empty_cache()  # give the sampling activations back to training
    return results


def sample_images(
    pipeline_or_components: DiffusionPipeline | Mapping[str, Any],
    prompts: Sequence[PromptSpec],
    out_dir: str | Path,
    *,
    step: int | None = None,
    model_name: str = "",
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_image: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Sample one image per prompt into ``out_dir`` (``out_dir/step-NNNNNN/`` when ``step`` is
    given), plus ``grid.png`` of them all. Returns the image paths (grid not included).

    ``pipeline_or_components``: a pipeline (`load_pipeline`, `pipeline_from_modules`) or the
    keyword arguments of `pipeline_from_modules` as a mapping. ``device``: move the pipeline
    there first (leave None for live training modules: they are sampled where they are).
    ``autocast_dtype``: run under ``torch.autocast`` with this dtype, as training does with
    mixed precision (needed when the modules hold different dtypes). ``on_image(done, total)``
    is called after each image (a progress display: sampling a real model takes minutes).

    Every PNG carries its settings in A1111's "parameters" chunk (the grid: the first image's,
    as A1111 does), with ``model_name`` as the model.
    """
    if not prompts:
        raise ValueError("sample_images: no prompts to sample")
    pipeline = _as_pipeline(pipeline_or_components)
    if device is not None:
        pipeline.to(device)
    out_dir = Path(out_dir)
    if step is not None:
        out_dir = out_dir / f"step-{step:06d}"
    out_dir.mkdir(parents=True, exist_ok=True)

    results = _generate_all(pipeline, prompts, autocast_dtype, on_image)
    paths = []
    for index, (spec, image) in enumerate(results):
        path = save_png(image, out_dir / f"{index:03d}-seed{spec.seed}.png", parameters_text(spec, model_name, flow_family(pipeline)))
        logger.info("sample %s: %s", path, spec.prompt)
        paths.append(path)
    grid, _ = make_grid([image for _, image in results])
    save_png(grid, out_dir / GRID_NAME, parameters_text(results[0][0], model_name, flow_family(pipeline)))
    return paths


def sample_grid(
    models: Sequence[tuple[str, DiffusionPipeline | str | Path]],
    prompts: Sequence[PromptSpec],
    out: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """An X/Y grid: one row per model (label, pipeline or anything `load_pipeline` takes),
    one column per prompt, rows labelled with the model labels and columns with the prompts.

    Seeds are resolved once (seed -1 too), so every cell of a column has the same seed and
    settings and differs only by the model. Models are loaded one at a time and released, so
    comparing many checkpoints needs the memory of one. Writes ``out`` (a PNG with the first
    cell's parameters) and returns it.
    """
    if not models or not prompts:
        raise ValueError("sample_grid: needs at least one model and one prompt")
    cells: list[Image.Image] = []
    resolved: list[PromptSpec] | None = None
    flow = None
    for label, model in models:
        pipeline = model if isinstance(model, DiffusionPipeline) else load_pipeline(model, dtype=dtype)
        if device is not None:
            pipeline.to(device)
        if resolved is None:
            resolved = [resolve_spec(spec, pipeline) for spec in prompts]
            flow = flow_family(pipeline)
        logger.info("grid row %r: %d prompts", label, len(resolved))
        cells.extend(image for _, image in _generate_all(pipeline, resolved, None))
        del pipeline  # a loaded model is released before the next one loads
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    grid, _ = make_grid(
        cells,
        cols=len(prompts),
        row_labels=[label for label, _ in models],
        col_labels=[spec.prompt for spec in resolved],
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_png(grid, out, parameters_text(resolved[0], models[0][0], flow))
