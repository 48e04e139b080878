"""Pipelines to sample from: the live modules of a training run, or a model on disk.

During training the pipeline is assembled from the modules being trained, so nothing is
loaded or copied: the images show exactly the weights of that step. After training,
`load_pipeline` takes what users point at: a diffusers folder, a single-file checkpoint, a
run folder or one of its checkpoints. SDXL models give a ``StableDiffusionXLPipeline``, which
samples with the same prompt files and samplers.

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

from edlib.model.identify import SINGLE_FILE_SUFFIXES, folder_is_sdxl, hub_is_sdxl, is_sdxl_file, model_location
from edlib.model.methods.textual_inversion import spell_out, vector_tokens
from edlib.model.models import pipeline_class
from edlib.sample.samplers import scheduler_from_config


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
) -> DiffusionPipeline:
    """A pipeline around live (training) modules: no reload, no copy of any weight; an SDXL
    pipeline when ``text_encoder_2`` (and ``tokenizer_2``) are given.

    Pass the plain modules (``accelerator.unwrap_model(unet)``), not DDP/compile wrappers.
    ``scheduler_config`` is the model's (or the training noise scheduler's) config; each
    prompt's sampler is built from it, keeping its betas and prediction type. ``clip_skip``:
    the text encoder layer prompts use unless they say otherwise (a run's own). ``ema``: a
    diffusers ``EMAModel`` over the UNet's parameters (all of them, or its trainable ones);
    `sample_images` then samples with the EMA weights swapped in and swaps the training
    weights back afterwards.
    """
    components = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler_from_config(scheduler_config),
    }
    if text_encoder_2 is not None:
        pipeline = pipeline_class(sdxl=True)(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, **components)
    else:
        # Samples are the user's own evaluation images: no safety checker to load or run.
        pipeline = pipeline_class(sdxl=False)(
            **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    pipeline.set_progress_bar_config(disable=True)  # sampling logs one line per image instead
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
    )


def pipeline_from_checkpoint(run_or_checkpoint: str | Path, *, dtype: torch.dtype | None = None) -> DiffusionPipeline:
    """The pipeline of a training checkpoint (a run folder means its newest complete one):
    the run's base model with what the run trained put back by its method (full weights,
    LoRA adapters or new embeddings), through `edlib.model.trained.load_trained`."""
    from edlib.model.trained import load_trained

    trained = load_trained(run_or_checkpoint, dtype=dtype or torch.float32)
    return pipeline_from_models(trained.models, clip_skip=trained.config.clip_skip)


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

    def options(sdxl: bool) -> dict[str, Any]:
        no_safety = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
        return {"torch_dtype": dtype, **no_safety}

    if path.is_dir() and (path / "model_index.json").is_file():
        sdxl = folder_is_sdxl(path)
        pipeline = pipeline_class(sdxl).from_pretrained(path, **options(sdxl))
    elif path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        sdxl = is_sdxl_file(path)
        config = config or single_file_base(path)
        extra = {} if config is None else {"config": str(config)}
        try:
            pipeline = pipeline_class(sdxl).from_single_file(str(path), **options(sdxl), **extra)
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
        sdxl = hub_is_sdxl(str(model_or_run))
        pipeline = pipeline_class(sdxl).from_pretrained(str(model_or_run), **options(sdxl))
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    else:
        raise ValueError(
            f"{path}: not a model: expected a diffusers folder (with model_index.json), a "
            f"{'/'.join(SINGLE_FILE_SUFFIXES)} file, a run folder or one of its checkpoints"
        )
    pipeline.set_progress_bar_config(disable=True)
    return spell_out_placeholders_as_training_did(pipeline)
