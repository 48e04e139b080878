"""Export a full fine-tune as a diffusers folder (what ``from_pretrained`` loads).

The folder is diffusers' own ``StableDiffusionPipeline.save_pretrained`` output (safetensors
weights, configs, tokenizer, scheduler), without a safety checker; for SDXL (a second text
encoder and tokenizer) ``StableDiffusionXLPipeline``'s. It is built beside the
target under a temporary name and moved into place when complete, so a crash never leaves a
folder that looks like a model and is not one.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import torch

from edlib.export.single_file import DTYPES
from edlib.sample.samplers import scheduler_from_config


def _cpu_copy(model, dtype: torch.dtype):
    """The model's weights in ``dtype`` on the CPU, as a new model of the same class.

    Converting the trainer's model in place and back would round its fp32 weights through
    fp16, so the copy is built empty (no memory, no random init) and filled with the
    converted tensors.
    """
    from accelerate import init_empty_weights

    with init_empty_weights():
        if hasattr(model, "from_config"):  # diffusers models
            converted = type(model).from_config(model.config)
        else:  # transformers models; saving writes the dtype into the config, so not the original's
            converted = type(model)(copy.deepcopy(model.config))
    state = {
        key: value.detach().to("cpu", dtype if value.is_floating_point() else value.dtype, copy=True)
        for key, value in model.state_dict().items()
    }
    converted.load_state_dict(state, assign=True)
    return converted.eval()


def _check_replaceable(out_dir: Path) -> None:
    """Only an empty folder or a previous diffusers export may be replaced: anything else
    at ``out_dir`` could be the user's own files."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "model_index.json").exists()):
        raise FileExistsError(f"{out_dir}: exists and is not a diffusers export; choose another output folder")


def _replace_dir(built: Path, out_dir: Path) -> None:
    """Move the finished folder ``built`` to ``out_dir``, replacing what is there."""
    if not out_dir.exists():
        os.replace(built, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
    os.replace(out_dir, old)
    os.replace(built, out_dir)
    shutil.rmtree(old)


def save_pipeline_folder(pipeline, out_dir: Path) -> Path:
    """Save ``pipeline`` as a diffusers folder at ``out_dir``: written beside it first and
    moved into place whole, so an interrupted export never leaves a folder that loads."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    built = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.partial")
    shutil.rmtree(built, ignore_errors=True)
    try:
        pipeline.save_pretrained(built, safe_serialization=True)
        _replace_dir(built, out_dir)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return out_dir


def export_diffusers(
    unet,
    vae,
    text_encoder,
    tokenizer,
    scheduler_config,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    text_encoder_2=None,
    tokenizer_2=None,
) -> Path:
    """Write a ``StableDiffusionPipeline`` folder to ``out_dir`` that ``from_pretrained`` loads
    (a ``StableDiffusionXLPipeline`` one with ``text_encoder_2`` and ``tokenizer_2``).

    ``scheduler_config`` is the base model's scheduler config (or scheduler); ``dtype`` is
    "fp16", "fp32" or None to keep the models' own dtype. The models are not changed. A
    previous diffusers export at ``out_dir`` is replaced; any other existing folder is an
    error. Returns ``out_dir``.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)} or None")
    if (text_encoder_2 is None) != (tokenizer_2 is None):
        raise ValueError("SDXL export: text_encoder_2 and tokenizer_2 go together (give both or neither)")
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    if dtype is not None:
        unet, vae, text_encoder = (_cpu_copy(model, DTYPES[dtype]) for model in (unet, vae, text_encoder))
        if text_encoder_2 is not None:
            text_encoder_2 = _cpu_copy(text_encoder_2, DTYPES[dtype])

    components = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler_from_config(scheduler_config),
    }
    if text_encoder_2 is not None:
        pipeline = StableDiffusionXLPipeline(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, **components)
    else:
        pipeline = StableDiffusionPipeline(
            **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    return save_pipeline_folder(pipeline, out_dir)
