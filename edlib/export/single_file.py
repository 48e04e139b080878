"""Export a full fine-tune as one ``.safetensors`` file in the original SD key layout.

This is the file AUTOMATIC1111, ComfyUI and diffusers' ``from_single_file`` load: UNet, VAE
and text encoder(s) together, keys renamed by :mod:`edlib.export.sd_keys`. SDXL files hold
both text encoders under ``conditioner.embedders.0`` (CLIP-L) and ``.1`` (OpenCLIP-G). The file is written
under a temporary name and renamed into place, so a crash or a full disk never leaves a
half-written model where a user (or a UI watching the folder) would pick it up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from edlib import __version__
from edlib.export import sd_keys

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
VARIANTS = ("sd1", "sd2", "sdxl")


def infer_variant(text_encoder, text_encoder_2=None) -> str:
    """``"sdxl"`` when there is a second text encoder; else ``"sd1"`` or ``"sd2"`` from the
    text encoder: SD1.x uses OpenAI's CLIP, whose MLP uses ``quick_gelu``; SD2.x uses
    OpenCLIP, whose MLP uses exact ``gelu``."""
    if text_encoder_2 is not None:
        return "sdxl"
    return "sd1" if text_encoder.config.hidden_act == "quick_gelu" else "sd2"


def original_state_dict(unet, vae, text_encoder, *, variant: str, text_encoder_2=None) -> dict[str, torch.Tensor]:
    """The models' weights under their original SD names (the tensors themselves)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown value {variant!r}; allowed: {', '.join(VARIANTS)}")
    if (variant == "sdxl") != (text_encoder_2 is not None):
        raise ValueError(f"variant {variant!r}: SDXL needs text_encoder_2, SD1.x / SD2.x have none")
    if variant == "sdxl":
        text = {
            **sd_keys.clip_to_original(text_encoder.state_dict(), sd_keys.SDXL_CLIP_PREFIX),
            **sd_keys.open_clip_to_original(text_encoder_2.state_dict(), sd_keys.SDXL_OPEN_CLIP_PREFIX),
        }
    elif variant == "sd1":
        text = sd_keys.clip_to_original(text_encoder.state_dict())
    else:
        text = sd_keys.open_clip_to_original(text_encoder.state_dict())
    return {
        **sd_keys.unet_to_original(unet.state_dict(), unet.config),
        **sd_keys.vae_to_original(vae.state_dict(), vae.config),
        **text,
    }


def _metadata(extra: Mapping[str, Any] | None, dtype: str, variant: str) -> dict[str, str]:
    """safetensors metadata is str -> str; other values (training info dicts, numbers) are
    stored as JSON so they survive the round trip. edlib's own keys describe the file
    itself, so they are not overridable."""
    metadata = {
        str(key): value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for key, value in (extra or {}).items()
    }
    metadata.update(edlib_version=__version__, edlib_variant=variant, edlib_dtype=dtype)
    return metadata


def write_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]
) -> None:
    """``save_file`` to a temporary name beside ``path``, then an atomic rename onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(dict(tensors), temporary, metadata=dict(metadata))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_single_file(
    unet,
    vae,
    text_encoder,
    out_path: str | Path,
    *,
    dtype: str = "fp16",
    metadata: Mapping[str, Any] | None = None,
    variant: str | None = None,
    text_encoder_2=None,
) -> Path:
    """Write UNet, VAE and text encoder(s) to ``out_path`` (a ``.safetensors`` file) in the
    original Stable Diffusion layout, in ``dtype`` ("fp16" or "fp32").

    ``variant`` is "sd1" (CLIP text encoder), "sd2" (OpenCLIP layout) or "sdxl" (both, with
    ``text_encoder_2``); None reads it from the text encoders (see :func:`infer_variant`). ``metadata`` is added to the file's safetensors
    metadata next to ``edlib_version``. The models are not changed: weights are copied to the
    CPU in ``dtype``. Pass the plain models (``accelerator.unwrap_model``), not DDP or
    ``torch.compile`` wrappers. Returns ``out_path``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path}: a single-file export must end in .safetensors")
    variant = infer_variant(text_encoder, text_encoder_2) if variant is None else variant
    original = original_state_dict(unet, vae, text_encoder, variant=variant, text_encoder_2=text_encoder_2)

    tensors = {}
    for key, value in original.items():
        target = DTYPES[dtype] if value.is_floating_point() else value.dtype
        # A fresh contiguous CPU copy: safetensors refuses views and shared storage, and the
        # trainer's models must stay as they are.
        tensors[key] = value.detach().to("cpu", target, copy=True).contiguous()
    write_safetensors_atomic(tensors, out_path, _metadata(metadata, dtype, variant))
    return out_path
