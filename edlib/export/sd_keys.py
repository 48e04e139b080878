"""Key names of the original Stable Diffusion checkpoint layout, from diffusers models.

AUTOMATIC1111, ComfyUI and most model sites use the checkpoint layout of the original
CompVis / Stability code (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*``). diffusers ships the converter *from* that layout
(``diffusers.loaders.single_file_utils``); exporting needs the other direction, which is here.

Each function takes a component's diffusers ``state_dict`` (and, where the layout depends on
it, the component's config) and returns a new dict with original key names. Nothing is
copied: the values are the same tensors, except where the original layout stores a weight in
another shape (VAE attention, OpenCLIP's fused q/k/v). The tables are derived from the config
(number of blocks, layers per block, which blocks have attention), so the same code maps the
tiny test models and the real SD1.x / SD2.x / SDXL models. A key the tables do not cover is an error
that names it: a silently dropped weight would give a checkpoint that loads and is broken.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."  # SD1.x: OpenAI CLIP ViT-L/14
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD2.x: OpenCLIP ViT-H/14
# SDXL keeps both encoders in a list of "embedders": CLIP ViT-L in the transformers layout,
# OpenCLIP ViT-bigG in OpenCLIP's own (with its text projection).
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

StateDict = Mapping[str, torch.Tensor]

# Inside a UNet ResNet block the original names the layers by position in nn.Sequential.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# VAE ResNet blocks keep diffusers' names except for the shortcut.
_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_ATTENTION_CONV_WEIGHTS = ("q.weight", "k.weight", "v.weight", "proj_out.weight")

# OpenCLIP's names for the pieces of one transformer layer (q/k/v are fused, see below).
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _per_block(value: int | list[int] | tuple[int, ...], blocks: int) -> list[int]:
    """diffusers allows ``layers_per_block`` as one int or one value per block."""
    return [int(value)] * blocks if isinstance(value, int) else [int(v) for v in value]


def _add_submodules(table: dict[str, str], diffusers: str, original: str, names: Mapping[str, str]) -> None:
    for d_name, o_name in names.items():
        table[f"{diffusers}.{d_name}"] = f"{original}.{o_name}"


def unet_module_table(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers module path -> original module path, for a ``UNet2DConditionModel`` config.

    The original UNet is three flat lists: ``input_blocks`` (conv_in, then per level its
    ResNet[+attention] layers and a downsampler), ``middle_block`` (ResNet, attention, ResNet)
    and ``output_blocks`` (per level one more layer than on the way down, the last one also
    holding the upsampler after its attention, if any).
    """
    down_types = list(config["down_block_types"])
    up_types = list(config["up_block_types"])
    down_layers = _per_block(config["layers_per_block"], len(down_types))
    table = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    if config.get("addition_embed_type") == "text_time":  # SDXL: pooled text + micro-conditioning
        table["add_embedding.linear_1"] = "label_emb.0.0"
        table["add_embedding.linear_2"] = "label_emb.0.2"

    index = 1  # input_blocks.0 is conv_in
    for block, block_type in enumerate(down_types):
        for layer in range(down_layers[block]):
            resnet = f"down_blocks.{block}.resnets.{layer}"
            _add_submodules(table, resnet, f"input_blocks.{index}.0", _UNET_RESNET)
            if "CrossAttn" in block_type:
                table[f"down_blocks.{block}.attentions.{layer}"] = f"input_blocks.{index}.1"
            index += 1
        if block < len(down_types) - 1:  # every level but the deepest downsamples
            table[f"down_blocks.{block}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1

    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        _add_submodules(table, "mid_block.resnets.0", "middle_block.0", _UNET_RESNET)
        table["mid_block.attentions.0"] = "middle_block.1"
        _add_submodules(table, "mid_block.resnets.1", "middle_block.2", _UNET_RESNET)

    index = 0
    up_layers = list(reversed(down_layers))
    for block, block_type in enumerate(up_types):
        has_attention = "CrossAttn" in block_type
        for layer in range(up_layers[block] + 1):
            resnet = f"up_blocks.{block}.resnets.{layer}"
            _add_submodules(table, resnet, f"output_blocks.{index}.0", _UNET_RESNET)
            if has_attention:
                table[f"up_blocks.{block}.attentions.{layer}"] = f"output_blocks.{index}.1"
            index += 1
        if block < len(up_types) - 1:  # every level but the last upsamples, after its last layer
            slot = 2 if has_attention else 1
            table[f"up_blocks.{block}.upsamplers.0.conv"] = f"output_blocks.{index - 1}.{slot}.conv"
    return table


def vae_module_table(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers module path -> original module path, for an ``AutoencoderKL`` config.

    The original decoder numbers its levels from the deepest (``up.{n-1}`` runs first), the
    reverse of diffusers' ``up_blocks``; the encoder numbers them in the same order.
    """
    levels = len(config["down_block_types"])
    layers = int(config["layers_per_block"])
    table: dict[str, str] = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        table[f"{part}.conv_in"] = f"{part}.conv_in"
        table[f"{part}.conv_out"] = f"{part}.conv_out"
        table[f"{part}.conv_norm_out"] = f"{part}.norm_out"
        _add_submodules(table, f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", _VAE_RESNET)
        _add_submodules(table, f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", _VAE_RESNET)
        _add_submodules(table, f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTENTION)

    for level in range(levels):
        for layer in range(layers):
            resnet = f"encoder.down_blocks.{level}.resnets.{layer}"
            _add_submodules(table, resnet, f"encoder.down.{level}.block.{layer}", _VAE_RESNET)
        if level < levels - 1:
            table[f"encoder.down_blocks.{level}.downsamplers.0.conv"] = f"encoder.down.{level}.downsample.conv"

    for block in range(levels):
        level = levels - 1 - block
        for layer in range(layers + 1):  # decoder levels have one more ResNet than encoder ones
            resnet = f"decoder.up_blocks.{block}.resnets.{layer}"
            _add_submodules(table, resnet, f"decoder.up.{level}.block.{layer}", _VAE_RESNET)
        if block < levels - 1:
            table[f"decoder.up_blocks.{block}.upsamplers.0.conv"] = f"decoder.up.{level}.upsample.conv"
    return table


def original_path(path: str, table: Mapping[str, str], component: str) -> str:
    """A diffusers module or weight path in the original layout: renamed by the longest
    module path of ``table`` it starts with."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in table:
            return ".".join([table[module], *parts[cut:]])
    raise ValueError(
        f"{component}: weight {path!r} has no name in the original Stable Diffusion layout "
        "(which only SD1.x / SD2.x / SDXL architectures have)"
    )


def rename(state_dict: StateDict, table: Mapping[str, str], component: str) -> dict[str, torch.Tensor]:
    """Rename every key by the longest module path of ``table`` it starts with."""
    return {original_path(key, table, component): value for key, value in state_dict.items()}


def unet_to_original(state_dict: StateDict, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A ``UNet2DConditionModel`` state dict under ``model.diffusion_model.*``."""
    renamed = rename(state_dict, unet_module_table(config), "UNet")
    return {UNET_PREFIX + key: value for key, value in renamed.items()}


def vae_to_original(state_dict: StateDict, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An ``AutoencoderKL`` state dict under ``first_stage_model.*``.

    The original VAE attention uses 1x1 convolutions where diffusers uses linear layers, so
    those weights get two trailing unit dimensions back.
    """
    renamed = rename(state_dict, vae_module_table(config), "VAE")
    out = {}
    for key, value in renamed.items():
        attention_weight = ".mid.attn_1." in key and key.endswith(_VAE_ATTENTION_CONV_WEIGHTS)
        if attention_weight and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[VAE_PREFIX + key] = value
    return out


def _text_model_keys(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """``CLIPTextModel`` keys without the ``text_model.`` level that transformers < 5.6 had,
    checked to be the text model's own parts. ``position_ids`` (a saved ``arange`` in older
    transformers, not a weight) is left out: both layouts rebuild it."""
    keys = {key.removeprefix("text_model."): value for key, value in state_dict.items()}
    keys.pop("embeddings.position_ids", None)
    for key in keys:
        if not key.startswith(("embeddings.", "encoder.layers.", "final_layer_norm.")):
            raise ValueError(
                f"text encoder: weight {key!r} is not part of a CLIPTextModel; "
                "only SD1.x / SD2.x / SDXL text encoders can be exported to a single file"
            )
    return keys


def clip_to_original(state_dict: StateDict, prefix: str = CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """SD1.x (and SDXL's first encoder, with ``prefix`` `SDXL_CLIP_PREFIX`): the original
    stores the transformers CLIP text model itself, so only the prefix changes."""
    return {prefix + key: value for key, value in _text_model_keys(state_dict).items()}


def open_clip_to_original(state_dict: StateDict, prefix: str = OPEN_CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """SD2.x (and SDXL's second encoder, with ``prefix`` `SDXL_OPEN_CLIP_PREFIX`): OpenCLIP's
    own names under ``prefix``.

    OpenCLIP uses ``nn.MultiheadAttention``, which keeps q, k and v as one ``in_proj`` matrix
    (rows: q, then k, then v). diffusers' loader splits it back in the same order. SDXL's
    encoder has a text projection (``CLIPTextModelWithProjection``): OpenCLIP multiplies by
    the matrix (``x @ text_projection``) where a Linear layer multiplies by its transpose, so
    it is stored transposed, ``[width, projection]``.
    """
    state_dict = dict(state_dict)
    projection = state_dict.pop("text_projection.weight", None)
    keys = _text_model_keys(state_dict)
    out = {
        "token_embedding.weight": keys.pop("embeddings.token_embedding.weight"),
        "positional_embedding": keys.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": keys.pop("final_layer_norm.weight"),
        "ln_final.bias": keys.pop("final_layer_norm.bias"),
    }
    layers = sorted({int(key.split(".")[2]) for key in keys if key.startswith("encoder.layers.")})
    for layer in layers:
        source, target = f"encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            q, k, v = (keys.pop(f"{source}self_attn.{name}_proj.{kind}") for name in "qkv")
            out[f"{target}attn.in_proj_{kind}"] = torch.cat([q, k, v], dim=0)
        for d_name, o_name in _OPEN_CLIP_LAYER.items():
            for kind in ("weight", "bias"):
                out[f"{target}{o_name}.{kind}"] = keys.pop(f"{source}{d_name}.{kind}")
    if keys:
        raise ValueError(f"text encoder: weights {sorted(keys)} have no name in the OpenCLIP layout")
    if projection is not None:
        out["text_projection"] = projection.T
    return {prefix + key: value for key, value in out.items()}
