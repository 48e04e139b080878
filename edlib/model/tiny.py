"""Tiny Stable Diffusion pipelines built from configs, for tests, the demo and offline use.

No machine edlib is tested on reaches a model hub, so the tests build real diffusers models
with random weights and a real CLIP tokenizer, write them as an ordinary diffusers folder, and
then load that folder through the same code path a user's model takes. Nothing here is a stand
in: every component is the class the real SD checkpoints use, only much smaller.

Four variants mirror the families the trainer must handle:

- ``"sd1"``: epsilon prediction, PNDM scheduler with SD1.5's config (scaled_linear betas
  0.00085..0.012 over 1000 steps), CLIP text encoder with ``quick_gelu`` and conv projections in
  the UNet's transformer blocks, like SD1.x.
- ``"sd2-v"``: v-prediction like SD2.x 768-v: DDIM scheduler with ``prediction_type:
  v_prediction``, an OpenCLIP-style text encoder (``gelu``), and a UNet with
  ``use_linear_projection`` and a per-block list of ``attention_head_dim``, like SD2.x.
- ``"sdxl"``: SDXL: two text encoders (a CLIP-L-like ``CLIPTextModel`` and an OpenCLIP-G-like
  ``CLIPTextModelWithProjection`` whose projected pooled output joins the time embedding),
  micro-conditioning (``addition_embed_type: text_time``), an Euler scheduler as SDXL ships,
  and a VAE with ``force_upcast`` (SDXL's VAE overflows in fp16). The two encoders have
  different widths (32 and 48), so code that mixes them up fails on shapes.
- ``"sdxl-v"``: the same with v-prediction.
- ``"sd3"``, ``"flux"``, ``"flux-schnell"``: SD3.5 and FLUX.1 dev/schnell, trained by flow
  matching; built in `edlib.model.tiny_flow`.

The VAE has three blocks, so it downsamples **4x** (SD's VAE has four blocks and downsamples
8x). The factor is ``2 ** (len(vae.config.block_out_channels) - 1)``; code that assumes 8 fails
on these models, which is the point: the trainer must read the factor from the VAE config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

VARIANTS = ("sd1", "sd2-v", "sdxl", "sdxl-v", "sd3", "flux", "flux-schnell")
SDXL_VARIANTS = ("sdxl", "sdxl-v")
# SDXL: the second encoder's width and projection, and the size of each micro-conditioning
# number's embedding; the UNet's added-embedding input is projection + 6 x this.
_SDXL_TEXT2_WIDTH, _SDXL_PROJECTION, _SDXL_TIME_EMBED = 48, 40, 8

# Words that get their own token (the tokenizer still spells out any other text character by
# character, so every caption tokenizes). Chosen to cover typical test captions.
DEFAULT_WORDS = tuple(
    "a an the of and with in on at by for to from photo picture painting drawing portrait "
    "style art man woman person face girl boy cat dog bird horse car house tree flower sky "
    "red green blue black white yellow big small old young sitting standing running smiling "
    "close up landscape city night day sun water mountain beach forest room table chair shirt "
    "hat dress hair eyes blurry sharp detailed simple background sks ohwx zwx rare token".split()
)

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_EOW = "</w>"  # CLIP's BPE marks the last symbol of a word with this suffix


def _byte_level(word: str) -> str:
    """The word's UTF-8 bytes in the byte-level alphabet the CLIP tokenizer works in."""
    from tokenizers import pre_tokenizers

    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(word)
    return "".join(piece for piece, _ in pieces)


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the lowest-ranked adjacent pair until none is ranked."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def _clip_vocab_and_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary: the 256 byte symbols, the same with ``</w>``, the merges
    that make each word one token, then the two special tokens (the order CLIP's own vocab
    uses).

    BPE always applies the lowest-ranked merge it can, so a merge chain written per word
    breaks as soon as another word's earlier merge splits it differently ("orange" ranks
    ``o r`` before "zorblat" gets ``z o``). Each word is therefore run through BPE with the
    merges so far, and while it is still in pieces, a merge of its first two pieces is
    appended. An appended merge ranks after every earlier one, and BPE only reaches it
    when no earlier merge applies, which never happens inside an already finished word:
    adding a word never changes how the words before it tokenize.
    """
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + _EOW for s in alphabet]:
        vocab[symbol] = len(vocab)

    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = list(_byte_level(word.strip().lower()))
        if not symbols:
            continue
        symbols[-1] += _EOW
        while len(pieces := _bpe(symbols, ranks)) > 1:
            ranks[(pieces[0], pieces[1])] = len(ranks)
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
    for special in (_BOS, _EOS):
        vocab[special] = len(vocab)
    return vocab, list(ranks)


def build_tiny_tokenizer(out_dir: str | Path, words: Iterable[str] | None = None):
    """Write a CLIP tokenizer (vocab.json, merges.txt and the tokenizer's own files) to
    ``out_dir`` and return it loaded from there."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges(DEFAULT_WORDS if words is None else words)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (out_dir / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    # Loading from the two files works with both the slow (transformers 4) and the
    # tokenizers-backed (transformers 5) CLIPTokenizer; saving adds the tokenizer's own files.
    CLIPTokenizer.from_pretrained(out_dir, model_max_length=77).save_pretrained(out_dir)
    return CLIPTokenizer.from_pretrained(out_dir)


def _text_encoder(variant: str, tokenizer, *, second: bool = False):
    """The text encoder; ``second``: SDXL's OpenCLIP-G-like second encoder (with projection)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_SDXL_TEXT2_WIDTH if second else 32,
        intermediate_size=64,
        # SDXL reads its encoders' penultimate layer, so they get one more layer here.
        num_hidden_layers=3 if variant in SDXL_VARIANTS else 2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=_SDXL_PROJECTION if second else 32,
        # SD1 and SDXL's first encoder are OpenAI CLIP (quick_gelu); SD2 and SDXL's second
        # encoder are OpenCLIP (gelu).
        hidden_act="quick_gelu" if variant == "sd1" or (variant in SDXL_VARIANTS and not second) else "gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if second else CLIPTextModel(config)


def _unet(variant: str, sample_size: int):
    from diffusers import UNet2DConditionModel

    common = dict(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        norm_num_groups=32,
    )
    if variant in SDXL_VARIANTS:
        # SDXL's shape in miniature: no attention at the top level, several transformer
        # layers deeper down, linear projections, and the pooled text + 6 micro-conditioning
        # numbers added to the time embedding ("text_time").
        return UNet2DConditionModel(
            **common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=32 + _SDXL_TEXT2_WIDTH,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=_SDXL_TIME_EMBED,
            projection_class_embeddings_input_dim=_SDXL_PROJECTION + 6 * _SDXL_TIME_EMBED,
        )
    sd2 = variant == "sd2-v"
    return UNet2DConditionModel(
        **common,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        # SD1 gives one head count for every block; SD2 gives a per-block list and uses
        # linear (not 1x1 conv) projections in and out of its transformer blocks.
        attention_head_dim=[2, 4] if sd2 else 4,
        use_linear_projection=sd2,
    )


def _vae(variant: str = "sd1"):
    from diffusers import AutoencoderKL

    sdxl = variant in SDXL_VARIANTS

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        # SDXL's VAE has its own scaling factor and overflows in fp16 (diffusers then
        # upcasts it: force_upcast).
        scaling_factor=0.13025 if sdxl else 0.18215,
        force_upcast=sdxl,
    )


def _scheduler(variant: str):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    common = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }
    if variant == "sd1":  # as shipped with SD1.5
        return PNDMScheduler(skip_prk_steps=True, **common)
    if variant in SDXL_VARIANTS:  # as shipped with SDXL base 1.0
        prediction = "v_prediction" if variant == "sdxl-v" else "epsilon"
        common.pop("set_alpha_to_one")
        return EulerDiscreteScheduler(timestep_spacing="leading", prediction_type=prediction, **common)
    return DDIMScheduler(clip_sample=False, prediction_type="v_prediction", **common)  # SD2.x 768-v


def build_tiny_pipeline(
    out_dir: str | Path,
    *,
    variant: str = "sd1",
    words: Iterable[str] | None = None,
    seed: int = 0,
    resolution: int = 64,
) -> Path:
    """Write a complete tiny Stable Diffusion pipeline (diffusers folder) to ``out_dir``.

    ``StableDiffusionPipeline.from_pretrained(out_dir)`` (``StableDiffusionXLPipeline`` for the
    SDXL variants) loads it offline. Weights are random
    but fixed by ``seed``; ``words`` become single tokens of the tokenizer (default: a small
    English word list); ``resolution`` is the image size the UNet's ``sample_size`` is set for.
    Returns ``out_dir``.
    """
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from edlib.model.tiny_flow import FLOW_VARIANTS, build_tiny_flow_pipeline

    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown value {variant!r}; allowed: {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    if variant in FLOW_VARIANTS:
        return build_tiny_flow_pipeline(out_dir, variant, DEFAULT_WORDS if words is None else words, resolution, build_tiny_tokenizer)
    tokenizer = build_tiny_tokenizer(out_dir / "tokenizer", words)

    vae = _vae(variant)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % (vae_factor * 2) != 0:
        raise ValueError(f"resolution: {resolution} must be a multiple of {vae_factor * 2} for the tiny model")
    if variant in SDXL_VARIANTS:
        # Both encoders share the tiny vocabulary (SDXL's two tokenizers differ only in padding).
        pipeline = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=_text_encoder(variant, tokenizer),
            text_encoder_2=_text_encoder(variant, tokenizer, second=True),
            tokenizer=tokenizer,
            tokenizer_2=build_tiny_tokenizer(out_dir / "tokenizer_2", words),
            unet=_unet(variant, resolution // vae_factor),
            scheduler=_scheduler(variant),
        )
        pipeline.save_pretrained(out_dir, safe_serialization=True)
        return out_dir
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=_text_encoder(variant, tokenizer),
        tokenizer=tokenizer,
        unet=_unet(variant, resolution // vae_factor),
        scheduler=_scheduler(variant),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
