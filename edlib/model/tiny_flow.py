"""Tiny SD3/SD3.5 and FLUX.1 pipelines built from configs, for tests (see `edlib.model.tiny`).

Every component is the class the released checkpoints use, much smaller, and the folder is
written by diffusers' own ``save_pretrained`` so it loads through the path a user's model takes:

- ``"flux"``: FLUX.1-dev in miniature: ``FluxTransformer2DModel`` with the guidance embedder
  (``guidance_embeds``, as dev has), CLIP-L (``CLIPTextModel``, whose pooled output conditions
  the model) and T5 (``T5EncoderModel``), a 16-channel-style VAE with FLUX's scale and shift
  (0.3611, 0.1159; here 4 latent channels, so the packed 2x2 patches have 16), and
  ``FlowMatchEulerDiscreteScheduler`` with FLUX's resolution-dependent shift settings.
- ``"flux-schnell"``: the same without the guidance embedder (schnell has none).
- ``"sd3"``: SD3.5 Medium in miniature: ``SD3Transformer2DModel`` with a dual-attention layer
  and RMS q/k norms (what SD3.5 adds over SD3), CLIP-L and CLIP-G (both
  ``CLIPTextModelWithProjection``; their pooled outputs join), T5, SD3's VAE factors (1.5305,
  0.0609) and the scheduler with SD3's static shift 3.0.

The two CLIP encoders have different widths (16 and 24) and T5 another (48), so code that mixes
them up fails on shapes. The T5 tokenizer is a Unigram tokenizer over a small word list, built
here like `edlib.model.tiny.build_tiny_tokenizer` builds the CLIP one: no hub, no sentencepiece
model file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

FLOW_VARIANTS = ("flux", "flux-schnell", "sd3")
_T5_WIDTH = 48
_CLIP_L, _CLIP_G = 16, 24  # SD3's two CLIP widths (and their projections); FLUX's CLIP-L is 16 too
_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.:;!?'()-_/<>"


def build_t5_tokenizer(out_dir: str | Path, words: Iterable[str]):
    """A T5 tokenizer (``T5TokenizerFast``, tokenizers' Unigram model as T5's own) whose
    vocabulary is ``<pad>``, ``</s>``, ``<unk>`` (T5's ids 0, 1, 2), each word as one
    ``"▁word"`` piece, and single characters, so any caption tokenizes; saved to ``out_dir``
    and returned loaded from there."""
    from transformers import T5TokenizerFast

    scores = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "\u2581": -2.0}
    for word in words:
        if word.strip():
            scores.setdefault("\u2581" + word.strip(), -1.0)  # a whole word scores above its characters
    for c in _CHARACTERS:
        scores.setdefault(c, -5.0)
        scores.setdefault("\u2581" + c, -4.0)
    out_dir = Path(out_dir)
    T5TokenizerFast(vocab=list(scores.items()), extra_ids=0, model_max_length=512).save_pretrained(out_dir)
    return T5TokenizerFast.from_pretrained(out_dir)


def _t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    # transformers' own tiny T5 test config, with the width the transformer reads.
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=_T5_WIDTH,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _clip(tokenizer, width: int, *, projection: bool, layers: int = 3):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,  # SD3 reads the penultimate layer
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(variant: str):
    from diffusers import AutoencoderKL

    flux = variant.startswith("flux")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32, 32),  # downsamples 4x (the released VAEs 8x)
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        # Both released VAEs have no quant convs, and normalise latents with a shift as well
        # as a scale: z = (x - shift) * scale.
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611 if flux else 1.5305,
        shift_factor=0.1159 if flux else 0.0609,
    )


def _scheduler(variant: str):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant.startswith("flux"):  # FLUX.1's scheduler_config.json
        return FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
        )
    return FlowMatchEulerDiscreteScheduler(shift=3.0)  # SD3/SD3.5's


def _flux_transformer(guidance: bool):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_T5_WIDTH,
        pooled_projection_dim=_CLIP_L,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 4, 8),
    )


def _sd3_transformer(sample_size: int):
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=_T5_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=_CLIP_L + _CLIP_G,
        pos_embed_max_size=32,  # patches a side: buckets up to 128 px on the 4x VAE
        dual_attention_layers=(0,),  # SD3.5's second attention in the first layers
        qk_norm="rms_norm",
    )


def build_tiny_flow_pipeline(out_dir: Path, variant: str, words: Iterable[str], resolution: int, build_tiny_tokenizer):
    """Write the tiny ``variant`` pipeline (see the module docstring) to ``out_dir``; the
    caller seeds torch first and gives its CLIP tokenizer builder
    (`edlib.model.tiny.build_tiny_tokenizer`). Returns ``out_dir``."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    words = list(words)
    vae = _vae(variant)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % (factor * 2) != 0:
        raise ValueError(f"resolution: {resolution} must be a multiple of {factor * 2} for the tiny model")
    clip_tokenizer = build_tiny_tokenizer(out_dir / "tokenizer", words)
    if variant.startswith("flux"):
        t5_tokenizer = build_t5_tokenizer(out_dir / "tokenizer_2", words)
        pipeline = FluxPipeline(
            scheduler=_scheduler(variant),
            vae=vae,
            text_encoder=_clip(clip_tokenizer, _CLIP_L, projection=False),
            tokenizer=clip_tokenizer,
            text_encoder_2=_t5(t5_tokenizer),
            tokenizer_2=t5_tokenizer,
            transformer=_flux_transformer(guidance=variant == "flux"),
        )
    else:
        t5_tokenizer = build_t5_tokenizer(out_dir / "tokenizer_3", words)
        pipeline = StableDiffusion3Pipeline(
            transformer=_sd3_transformer(resolution // factor),
            scheduler=_scheduler(variant),
            vae=vae,
            text_encoder=_clip(clip_tokenizer, _CLIP_L, projection=True),
            tokenizer=clip_tokenizer,
            text_encoder_2=_clip(clip_tokenizer, _CLIP_G, projection=True),
            tokenizer_2=build_tiny_tokenizer(out_dir / "tokenizer_2", words),
            text_encoder_3=_t5(t5_tokenizer),
            tokenizer_3=t5_tokenizer,
        )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
