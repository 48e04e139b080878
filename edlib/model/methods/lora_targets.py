"""Which layers of an SD3 or FLUX transformer get LoRA adapters: the presets of `lora_targets`.

- ``attention``: every linear layer of every attention: image-stream q, k, v and output
  (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), text-stream ones (``add_q_proj``,
  ``add_k_proj``, ``add_v_proj``, ``to_add_out``) and SD3.5's second attention (``attn2``).
  diffusers' ``train_dreambooth_lora_sd3.py`` default.
- ``attention_ff``: those and the feed-forward layers (``ff``, ``ff_context``, and in FLUX's
  single blocks ``proj_mlp`` and ``proj_out``, whose input is attention and MLP output side
  by side). diffusers' ``train_dreambooth_lora_flux.py`` default covers the double blocks' part
  of this; SimpleTuner's ``all+ffs`` is this.
- ``all_linear``: every linear layer of the transformer blocks, their modulation layers included
  (sd-scripts' FLUX and SD3 LoRA). The input embedders and the output layer stay as they are:
  diffusers' kohya-FLUX converter would drop adapters there without a word.

Layers are matched by their diffusers module path, so the adapters' names are diffusers' own and
the PEFT export needs no renaming.
"""

from __future__ import annotations

import re

import torch

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")
_ATTENTION = re.compile(r"\.(attn|attn2)\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)$")
_FEED_FORWARD = re.compile(r"\.(ff|ff_context)\.net\.(0\.proj|2)$|^single_transformer_blocks\.\d+\.(proj_mlp|proj_out)$")


def transformer_lora_layers(model: torch.nn.Module, preset: str) -> list[str]:
    """Module paths of the linear layers of ``model`` (an SD3 or FLUX transformer) that
    ``preset`` adapts (see the module docstring)."""
    if preset not in ("attention", "attention_ff", "all_linear"):
        raise ValueError(f"lora_targets: unknown value {preset!r}; allowed: attention, attention_ff, all_linear")
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if not name.startswith(tuple(f"{blocks}." for blocks in BLOCK_LISTS)):
            continue
        if preset == "all_linear" or _ATTENTION.search(name) or (preset == "attention_ff" and _FEED_FORWARD.search(name)):
            chosen.append(name)
    if not chosen:
        raise ValueError(f"lora_targets: {preset} found no layers in {type(model).__name__}")
    return sorted(chosen)
