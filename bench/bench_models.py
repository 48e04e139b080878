"""The benchmarks' models and data: published architectures with random weights, a data root of
random images, and the UNet's FLOPs per image (for MFU); and the helpers every bench shares
(device sync, peak memory, freeing, the device's name, appending a row to a JSONL file).

Random weights with the published architectures (`edlib.model.architectures`): nothing is
downloaded, and speed does not depend on weight values. A builder per model name in
`BUILDERS`; a new architecture adds one here and its cases in `train_gpu.CASES`.
"""

from __future__ import annotations

import gc
import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edlib.model import architectures as arch  # noqa: E402
from edlib.model.tiny import build_tiny_pipeline, build_tiny_tokenizer  # noqa: E402

RESOLUTION = {"sd15": 512, "sdxl": 1024}
NAMES = {"sd15": "SD1.5 architecture, random weights", "sdxl": "SDXL base 1.0 architecture, random weights"}


def build_sd15(out_dir: Path, device: str) -> Path:
    """An SD1.5-architecture diffusers folder with random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):  # random init on the GPU: seconds instead of a minute
        pipeline = StableDiffusionPipeline(
            vae=AutoencoderKL(**arch.SD_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**arch.SD15_TEXT_ENCODER)),
            tokenizer=build_tiny_tokenizer(out_dir / "tokenizer"),  # ids only; speed is the same
            unet=UNet2DConditionModel(**arch.SD15_UNET),
            scheduler=PNDMScheduler(**arch.SD15_SCHEDULER),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return _save(pipeline, out_dir)


def build_sdxl(out_dir: Path, device: str) -> Path:
    """An SDXL base 1.0-architecture diffusers folder with random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device(device):
        pipeline = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**arch.SDXL_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**arch.SDXL_TEXT_ENCODER)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch.SDXL_TEXT_ENCODER_2)),
            tokenizer=build_tiny_tokenizer(out_dir / "tokenizer"),
            tokenizer_2=build_tiny_tokenizer(out_dir / "tokenizer_2"),
            unet=UNet2DConditionModel(**arch.SDXL_UNET),
            scheduler=EulerDiscreteScheduler(**arch.SDXL_SCHEDULER),
        )
    return _save(pipeline, out_dir)


BUILDERS = {"sd15": build_sd15, "sdxl": build_sdxl}


def build(model: str, out_dir: Path, device: str, tiny: bool) -> Path:
    if tiny:
        return build_tiny_pipeline(out_dir, variant="sdxl" if model == "sdxl" else "sd1")
    return BUILDERS[model](out_dir, device)


def _save(pipeline, out_dir: Path) -> Path:
    # Saved in bf16 (half the bytes to write and read; random weights lose nothing); the
    # engine and the reference load them as fp32, as they would a real model.
    pipeline.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    del pipeline
    free("cuda" if torch.cuda.is_available() else "cpu")
    return out_dir


def make_data_root(root: Path, count: int, size: int) -> Path:
    """`count` random-noise PNGs of `size` x `size` (incompressible, like photos to decode)."""
    if root.is_dir() and len(list(root.glob("*.png"))) >= count:
        return root
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"photo of a cat_{i:04d}.png", compress_level=1)
    return root


def unet_train_flops_per_image(unet_config: dict, latent_side: int, *, base_trains: bool) -> float:
    """FLOPs of one UNet forward + backward for one image of latent_side x latent_side
    latents, counted on the meta device (no memory, no GPU time). `base_trains` False (LoRA):
    no weight gradients, only the input gradients the adapters need (their own FLOPs are
    negligible)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    unet.requires_grad_(base_trains)
    config = unet.config
    latents = torch.randn(1, config.in_channels, latent_side, latent_side, device="meta", requires_grad=not base_trains)
    hidden = torch.randn(1, 77, config.cross_attention_dim, device="meta")
    timesteps = torch.randint(0, 1000, (1,), device="meta")
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        added = {"text_embeds": torch.randn(1, pooled, device="meta"), "time_ids": torch.randn(1, 6, device="meta")}
    with FlopCounterMode(display=False) as counter:
        unet(latents, timesteps, hidden, added_cond_kwargs=added).sample.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


@lru_cache(maxsize=None)  # the same for every row of a run; a count of SDXL takes seconds
def model_flops_per_image(model: Path, resolution: int, *, base_trains: bool) -> float:
    """`unet_train_flops_per_image` for a diffusers folder at a resolution in pixels."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae_factor = 2 ** (len(AutoencoderKL.load_config(model / "vae")["block_out_channels"]) - 1)
    return unet_train_flops_per_image(
        UNet2DConditionModel.load_config(model / "unet"), resolution // vae_factor, base_trains=base_trains
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def free(device: str) -> None:
    torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def device_name(device: str) -> str:
    """What a row's "device" says: the GPU's name on CUDA, else "cpu"."""
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def append_jsonl(path: Path | str | None, row: dict) -> None:
    """Append `row` to `path` as one JSON line (nothing when `path` is None)."""
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
