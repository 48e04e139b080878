"""Rules across keys of the training config: combinations that each key allows alone but that
cannot train together. Each returns the message for the first key at fault (`key: what is
wrong; what to set`), which `TrainConfig` raises as a validation error."""

from __future__ import annotations

from typing import Any


def key_conflicts(config: Any) -> str | None:
    """The first conflict between keys of `config` (a TrainConfig), or None."""
    if config.method == "textual_inversion" and not config.placeholder_tokens:
        return "placeholder_tokens: textual_inversion needs at least one, e.g. [{token: <ohwx>, init_word: person}]"
    if config.method == "textual_inversion" and config.text_encoder_lr <= 0:
        return "text_encoder_lr: textual_inversion trains the new embeddings at this rate; set it, e.g. 5e-3"
    if config.cache_text_embeddings and (config.text_encoder_lr > 0 or (config.text_encoder_2_lr or 0) > 0):
        return (
            "cache_text_embeddings: cannot cache while a text encoder trains (text_encoder_lr or "
            "text_encoder_2_lr > 0); set them to 0 or cache_text_embeddings: false"
        )
    if config.cache_text_embeddings and config.shuffle_caption:
        return (
            "cache_text_embeddings: captions change every step with shuffle_caption; "
            "set shuffle_caption: false or cache_text_embeddings: false"
        )
    if config.full_bf16 and config.mixed_precision != "bf16":
        return (
            f"full_bf16: keeps the trained weights in bf16, which needs mixed_precision: bf16 (got "
            f"{config.mixed_precision!r}); set mixed_precision: bf16 or full_bf16: false"
        )
    if config.full_bf16 and config.method != "full":
        return (
            f"full_bf16: is for method: full (got {config.method!r}): LoRA adapters and new embeddings are a few "
            "million parameters, so bf16 would save little memory and lose their small updates; set full_bf16: false"
        )
    if config.hard_example_boost and not config.loss_tracking:
        return (
            "hard_example_boost: boosts the images the loss tracker flags; set loss_tracking: true or hard_example_boost: 0"
        )
    return None
