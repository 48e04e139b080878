"""The architecture of edlib's bundled world model, and where its pretrained weights live.

The world model is a real Stable Diffusion pipeline, only small: diffusers'
``UNet2DConditionModel`` and ``AutoencoderKL``, transformers' ``CLIPTextModel`` and
``CLIPTokenizer``, SD1.5's betas rescaled to zero terminal SNR with v prediction. Every edlib code path (scan, train, sample,
export) therefore runs on it unchanged, on a CPU, in minutes.

Sizes were chosen so that pretraining fits in under two hours on a 2-core CPU
(scripts/pretrain_world_model.py); the model card (pretrained/README.md) says what the
committed weights can draw:

- 64x64 images; a 3-block VAE, 16-32-32 channels (4x downsampling, 16x16x4 latents).
- A 3-level UNet, 32-96-128 channels (16x16, 8x8, 4x4), cross-attention at every level.
- A 2-layer CLIP text encoder, width 64, whose tokenizer knows every word of the world's
  grammar plus the novel shape names (``zorblat``, ...) as single tokens that pretraining
  never trains on, so a fine-tune can teach them.
"""

from __future__ import annotations

from pathlib import Path

from edlib.model.tiny import build_tiny_tokenizer
from edlib.world.grammar import vocabulary

RESOLUTION = 64
# DPM++ 2M steps to sample it with: its model card and the demo measure with 20; below
# about 12 its colours slip (tests/world/test_model.py has the numbers).
SAMPLE_STEPS = 20

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": RESOLUTION,
    # Replaced by the pretraining script with 1 / std of the trained VAE's latents, so the
    # UNet sees latents of unit variance, as SD's 0.18215 does for SD's VAE.
    "scaling_factor": 1.0,
}

UNET_CONFIG = {
    "sample_size": RESOLUTION // 4,
    "in_channels": 4,
    "out_channels": 4,
    # Wider at 8x8 and 4x4 than the first world model's 32-64-64, with cross-attention at
    # every level: 32-64-64 learnt colour and background but drew shapes at chance. Where
    # the width goes was picked by cost on this CPU: 5.0M parameters (3.4x) for 1.4x the
    # time of a training step; widening the 16x16 level costs twice as much per parameter.
    "block_out_channels": (32, 96, 128),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3,
    "up_block_types": ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

TEXT_ENCODER_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 64,
    "hidden_act": "quick_gelu",  # SD1's OpenAI CLIP
}

# SD1.5's betas, rescaled to zero terminal SNR (Lin et al. 2023), with v prediction and
# "trailing" timesteps, as SD2.x 768-v style models ship it (DDIM as the default sampler).
# Why not SD1.5's schedule as is: its last training timestep keeps sqrt(0.0047) of the
# image, and a 16x16 latent's mean over 256 positions averages the noise down 16x, so the
# background colour is plainly visible in x_T (about 3 noise standard deviations between
# two colours). A model trained on it reads the colour off the noise instead of the
# prompt, and at sampling, where x_T is pure noise, the seed picks the colour.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


def bundled_model_path() -> Path:
    """The pretrained world model shipped inside the package: a diffusers folder that
    ``StableDiffusionPipeline.from_pretrained`` (and edlib's ``model:`` key) loads offline."""
    path = Path(__file__).with_name("pretrained")
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no pretrained world model (model_index.json missing); "
            "rebuild it with scripts/pretrain_world_model.py"
        )
    return path


def build_world_pipeline(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write the untrained world model (random weights fixed by ``seed``) as a diffusers
    folder to ``out_dir`` and return ``out_dir``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out_dir / "tokenizer", vocabulary())
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT_ENCODER_CONFIG,
        )
    )
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE_CONFIG),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**UNET_CONFIG),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
