"""Config errors a newcomer can act on: one line per key, hints for typos and for the keys
other trainers use, short quotes of bad values."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import ValidationError

from edlib.data.small_files import quote

# Keys of other trainers' configs (diffusers' scripts, kohya sd-scripts, EveryDream2,
# OneTrainer) that users bring along, and what edlib calls them.
OTHER_TRAINERS_KEYS = {
    "learning_rate": "unet_lr",
    "lr": "unet_lr",
    "unet_learning_rate": "unet_lr",
    "text_encoder_learning_rate": "text_encoder_lr",
    "train_text_encoder": "text_encoder_lr (a rate > 0 trains it)",
    "train_batch_size": "batch_size",
    "max_train_steps": "max_steps",
    "num_train_epochs": "epochs",
    "max_train_epochs": "epochs",
    "max_epochs": "epochs",
    "pretrained_model_name_or_path": "model",
    "resume_ckpt": "model",
    "train_data_dir": "data_root",
    "instance_data_dir": "data_root",
    "data_dir": "data_root",
    "output_dir": "run_dir",
    "logdir": "run_dir",
    "project_name": "run_dir",
    "lr_scheduler_num_cycles": "lr_num_cycles",
    "lr_scheduler_power": "lr_power",
    "lr_warmup": "lr_warmup_steps",
    "optimizer_type": "optimizer",
    "use_8bit_adam": "optimizer: adamw8bit",
    "use_ema": "ema_decay (e.g. 0.999)",
    "snr_gamma": "min_snr_gamma",
    "network_rank": "network_dim",
    "rank": "network_dim",
    "checkpointing_steps": "save_every_n_steps",
    "save_steps": "save_every_n_steps",
    "save_every_n_epoch": "save_every_n_epochs",
    "checkpoints_total_limit": "keep_last_n_checkpoints",
    "save_last_n_epochs": "keep_last_n_checkpoints",
    "caption_dropout_rate": "caption_dropout",
    "cond_dropout": "caption_dropout",
    "shuffle_tags": "shuffle_caption",
    "enable_xformers_memory_efficient_attention": "attention: xformers",
    "xformers": "attention: xformers",
    "sdpa": "attention: sdpa",
    "validation_prompt": "sample_prompts",
    "sample_steps": "sample_every_n_steps",
    "validation_steps": "validate_every_n_steps",
    "resolution_list": "resolution",
}


def is_number(annotation: Any) -> bool:
    """Whether a field holds a number (int, float, or either or None), not a bool."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    kinds = [a for a in options if a is not type(None)]
    return bool(kinds) and all(a in (int, float) for a in kinds)


def describe_error(error: ValidationError, known: list[str]) -> str:
    """One readable line per problem: the key, what is wrong, and what was given. `known`:
    the config's keys, for "did you mean" hints."""
    lines = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, known, n=1)
            if key.lower() in OTHER_TRAINERS_KEYS:
                hint = f"other trainers call it that; edlib's key is {OTHER_TRAINERS_KEYS[key.lower()]}"
            elif close:
                hint = f"did you mean {close[0]!r}?"
            else:
                hint = "docs/config.md lists every key"
            lines.append(f"{key}: unknown key; {hint}")
        elif item["type"] == "missing":
            lines.append(f"{key}: required, not given")
        elif item["type"] == "literal_error":
            lines.append(f"{key}: unknown value {quote(item['input'])}; allowed: {item['ctx']['expected']}")
        elif not item["loc"]:  # a check across keys: its message names them
            lines.append(item["msg"].removeprefix("Value error, "))
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message} (got {quote(item['input'])})")
    return "invalid training config:\n  " + "\n  ".join(lines)
