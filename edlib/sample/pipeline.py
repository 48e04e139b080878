"""Pipelines to sample from: the live modules of a training run, or a model on disk.

During training the pipeline is assembled from the modules being trained, so nothing is
loaded or copied: the images show exactly the weights of that step. After training,
`load_pipeline` takes what users point at: a diffusers folder, a single-file checkpoint, a
run folder or one of its checkpoints. SDXL models give a ``StableDiffusionXLPipeline``, SD3
and FLUX models a ``StableDiffusion3Pipeline`` or ``FluxPipeline``, which sample with the same
prompt files (their sampler is Flow Match Euler, see `edlib.sample.samplers`).

Every pipeline made here spells out multi-vector textual-inversion placeholders the way
training did (`edlib.model.methods.textual_inversion.spell_out`), whether edlib trained them or
``load_textual_inversion`` added them later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import DiffusionPipeline

from edlib.model.identify import PIPELINES, SINGLE_FILE_SUFFIXES, file_family, folder_family, hub_family, model_location
from edlib.model.methods.textual_inversion import spell_out, vector_tokens
from edlib.model.models import pipeline_class, pipeline_options
from edlib.sample.samplers import scheduler_from_config


def pipeline_family(pipeline: DiffusionPipeline) -> str:
    """The model family of a pipeline ("sd", "sdxl", "sd3", "flux"), from its class."""
    for family, name in PIPELINES.items():
        if type(pipeline).__name__ == name:
            return family
    return "sdxl" if hasattr(pipeline, "text_encoder_2") else "sd"


def denoiser(pipeline: DiffusionPipeline):
    """The pipeline's UNet, or its transformer (SD3, FLUX)."""
    return getattr(pipeline, "transformer", None) or pipeline.unet


def spell_out_placeholders_as_training_did(pipeline: DiffusionPipeline) -> DiffusionPipeline:
    """Make ``pipeline`` spell out multi-vector placeholders as training captions are.

    diffusers' pipelines pass every prompt (and negative prompt) through
    ``maybe_convert_prompt(prompt, tokenizer)`` for each of their tokenizers before encoding.
    Its own version misses a placeholder written in another case than it was added in (CLIP's
    tokenizer still reads it as the placeholder, so the prompt gets one vector of several)
    and doubles one already spelled out; this one, set on the instance, reads the
    placeholders from that tokenizer's added tokens each call, so embeddings loaded later are
    covered too. Returns ``pipeline``.
    """

    def maybe_convert_prompt(prompt, tokenizer):
        vectors = vector_tokens(tokenizer)
        return spell_out(prompt, vectors) if isinstance(prompt, str) else [spell_out(p, vectors) for p in prompt]

    pipeline.maybe_convert_prompt = maybe_convert_prompt
    return pipeline


def pipeline_from_modules(
    unet,
    vae,
    text_encoder,
    tokenizer,
    scheduler_config: Mapping[str, Any],
    *,
    ema=None,
    text_encoder_2=None,
    tokenizer_2=None,
    clip_skip: int = 1,
    family: str | None = None,
    text_encoder_3=None,
    tokenizer_3=None,
    max_sequence_length: int | None = None,
) -> DiffusionPipeline:
    """A pipeline around live (training) modules: no reload, no copy of any weight; an SDXL
    pipeline when ``text_encoder_2`` (and ``tokenizer_2``) are given, unless ``family`` says
    otherwise ("sd3": with ``text_encoder_3``/``tokenizer_3``; "flux": ``unet`` is the FLUX
    transformer and ``text_encoder_2`` its T5). ``max_sequence_length``: the T5 length prompts
    are encoded with (SD3/FLUX; a run's own).

    Pass the plain modules (``accelerator.unwrap_model(unet)``), not DDP/compile wrappers.
    ``scheduler_config`` is the model's (or the training noise scheduler's) config; each
    prompt's sampler is built from it, keeping its betas and prediction type. ``clip_skip``:
    the text encoder layer prompts use unless they say otherwise (a run's own). ``ema``: a
    diffusers ``EMAModel`` over the UNet's parameters (all of them, or its trainable ones);
    `sample_images` then samples with the EMA weights swapped in and swaps the training
    weights back afterwards.
    """
    family = family or ("sdxl" if text_encoder_2 is not None else "sd")
    components = {
        "transformer" if family in ("sd3", "flux") else "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler_from_config(scheduler_config),
    }
    if family != "sd":
        components.update(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    if family == "sd3":
        components.update(text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    # Samples are the user's own evaluation images: no safety checker to load or run.
    pipeline = pipeline_class(family)(**components, **pipeline_options(family))
    pipeline.set_progress_bar_config(disable=True)  # sampling logs one line per image instead
    pipeline.edlib_max_sequence_length = max_sequence_length  # read by `edlib.sample.generate`
    pipeline.edlib_ema = ema  # read by `sample_images`; a plain attribute, not a component
    pipeline.edlib_clip_skip = clip_skip  # the default of prompts that set none (`resolve_spec`)
    return spell_out_placeholders_as_training_did(pipeline)


def is_run_or_checkpoint(path: Path) -> bool:
    """A run folder (holds ``checkpoints/``) or one of its ``checkpoints/step-NNNNNN``."""
    return path.is_dir() and ((path / "checkpoints").is_dir() or path.parent.name == "checkpoints")


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name`` that is not a path: a local folder ``runs/typo`` whose parent exists is
    a misspelt path and must say so, not fail later trying the hub."""
    path = Path(name)
    return len(path.parts) == 2 and not name.startswith((".", "/", "~")) and not path.parent.exists()


def pipeline_from_models(models, *, unet=None, ema=None, clip_skip: int = 1) -> DiffusionPipeline:
    """`pipeline_from_modules` for an `edlib.model.models.Models` bundle (``unet``: the plain
    UNet, when the bundle's is wrapped for training)."""
    return pipeline_from_modules(
        models.unet if unet is None else unet,
        models.vae,
        models.text_encoder,
        models.tokenizer,
        models.noise_scheduler.config,
        ema=ema,
        text_encoder_2=models.text_encoder_2,
        tokenizer_2=models.tokenizer_2,
        clip_skip=clip_skip,
        family=models.family,
        text_encoder_3=models.text_encoder_3,
        tokenizer_3=models.tokenizer_3,
        max_sequence_length=models.max_sequence_length,
    )


def pipeline_from_checkpoint(run_or_checkpoint: str | Path, *, dtype: torch.dtype | None = None) -> DiffusionPipeline:
    """The pipeline of a training checkpoint (a run folder means its newest complete one):
    the run's base model with what the run trained put back by its method (full weights,
    LoRA adapters or new embeddings), through `edlib.model.trained.load_trained`."""
    from edlib.model.trained import load_trained

    trained = load_trained(run_or_checkpoint, dtype=dtype or torch.float32)
    pipeline = pipeline_from_models(trained.models, clip_skip=trained.config.clip_skip)
    # A LoRA or textual-inversion run keeps its frozen base in the mixed-precision dtype (fp8
    # storage with `fp8_base`) beside fp32 adapters, as it trained: its samples run under the
    # same autocast as its training samples did, or the dtypes would not meet.
    pipeline.edlib_autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(trained.config.mixed_precision)
    return pipeline


def single_file_base(path: Path) -> Path | None:
    """The local diffusers folder a single file was trained from, when edlib exported it: the
    run's config (`RUN/exports/FILE`) or the file's `base_model` metadata, if that folder is
    on this machine. None otherwise (a hub model, or a file from elsewhere)."""
    candidates = []
    run_config = path.parent.parent / "config.yaml"
    if path.parent.name == "exports" and run_config.is_file():
        candidates.append((yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}).get("model"))
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            candidates.append((handle.metadata() or {}).get("base_model"))
    for candidate in candidates:
        if isinstance(candidate, str) and (Path(candidate).expanduser() / "model_index.json").is_file():
            return Path(candidate).expanduser()
    return None


def load_pipeline(
    model_or_run: str | Path,
    *,
    dtype: torch.dtype | None = None,
    config: str | Path | None = None,
) -> DiffusionPipeline:
    """A pipeline for what a user points at.

    - a diffusers folder (with ``model_index.json``), or a hub id;
    - a single ``.safetensors``/``.ckpt`` file in the original SD layout (``config``: a
      diffusers folder or hub id with the matching configs; without it diffusers looks the
      model type up on the hub);
    - a run folder (its newest complete checkpoint) or one of its ``checkpoints/step-NNNNNN``.

    ``dtype`` None is float32 (what a CPU needs); pass ``torch.float16`` or ``torch.bfloat16``
    to sample in half precision on a GPU.
    """
    # One dtype for every component: given None, diffusers loads fp32 while transformers 5
    # keeps a text encoder's stored fp16, a mix no device can run.
    dtype = dtype or torch.float32
    model_or_run = model_location(model_or_run)
    path = Path(model_or_run)

    def options(family: str) -> dict[str, Any]:
        no_safety = {"safety_checker": None, "requires_safety_checker": False} if family == "sd" else {}
        return {"dtype": dtype, **no_safety}

    if path.is_dir() and (path / "model_index.json").is_file():
        family = folder_family(path)
        pipeline = pipeline_class(family).from_pretrained(path, **options(family))
    elif path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        family = file_family(path)
        config = config or single_file_base(path)
        extra = {} if config is None else {"config": str(config)}
        try:
            if family in ("sd3", "flux"):  # a transformer file: the rest from `config` (edlib.model.flow)
                from edlib.model.flow import flow_single_file_pipeline

                pipeline = flow_single_file_pipeline(path, family, None if config is None else str(config), dtype)
            else:
                pipeline = pipeline_class(family).from_single_file(str(path), **options(family), **extra)
        except (OSError, ValueError) as error:
            if config is not None:
                raise
            raise ValueError(
                f"{path}: a single file holds weights only; diffusers needs the configs of its model family and "
                f"could not get them ({str(error).splitlines()[0][:200]}). Offline, give a diffusers folder of the "
                "same family, e.g. the base model it was trained from: edlib sample FILE --config BASE_MODEL_FOLDER "
                "(in Python: load_pipeline(FILE, config=...))"
            ) from error
    elif is_run_or_checkpoint(path):
        return pipeline_from_checkpoint(path, dtype=dtype)
    elif not path.exists() and _looks_like_hub_id(str(model_or_run)):
        family = hub_family(str(model_or_run))
        pipeline = pipeline_class(family).from_pretrained(str(model_or_run), **options(family))
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    else:
        raise ValueError(
            f"{path}: not a model: expected a diffusers folder (with model_index.json), a "
            f"{'/'.join(SINGLE_FILE_SUFFIXES)} file, a run folder or one of its checkpoints"
        )
    pipeline.set_progress_bar_config(disable=True)
    return spell_out_placeholders_as_training_did(pipeline)
