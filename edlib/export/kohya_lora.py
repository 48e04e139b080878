"""Export a LoRA / LoCon as one kohya-style ``.safetensors`` file.

This is the format AUTOMATIC1111, ComfyUI and diffusers' ``load_lora_weights`` all read. Each
adapted layer gives three tensors under a name built from its module path with dots turned
into underscores:

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight  [r, in]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight    [out, r]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha             scalar
    lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight ...

For SD1.x and SD2.x, kohya's sd-scripts train the diffusers UNet, so UNet names use the
diffusers module paths (``down_blocks_0_attentions_0``), not the original SD layout. For SDXL
kohya trains the original UNet, so SDXL names are the original module paths
(``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``, ResNet layers as
``in_layers_2``/``emb_layers_1``/``skip_connection``), mapped by the same tables as the
single-file export (:mod:`edlib.export.sd_keys`), and its two text encoders are ``lora_te1_``
(CLIP-L) and ``lora_te2_`` (OpenCLIP-G). A1111 and ComfyUI map these names to their own layout
and diffusers reads them. Text encoder names use transformers' ``text_model.`` path, which
transformers 5 no longer has in its module tree for ``CLIPTextModel``, so it is added.
A convolution's ``lora_down`` has the base layer's kernel, its ``lora_up`` is 1x1 (LoCon).
The loaders scale each layer's update by alpha / rank, as training did.

diffusers' own ``convert_state_dict_to_kohya`` is not used: it writes every alpha as the
rank (losing ``network_alpha``) and names the text encoder ``lora_te1`` (the SDXL name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from edlib import __version__
from edlib.export import sd_keys
from edlib.export.single_file import DTYPES, infer_variant, write_safetensors_atomic

UNET_PREFIX = "lora_unet_"
TEXT_ENCODER_PREFIX = "lora_te_"
SDXL_TEXT_ENCODER_PREFIXES = ("lora_te1_", "lora_te2_")
# kohya's names for the base model family, read by UIs to filter LoRAs by model.
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def _lora_layers(module: torch.nn.Module) -> dict[str, Any]:
    """peft LoRA layers of ``module`` by module path."""
    from peft.tuners.lora import LoraLayer

    layers = {name: layer for name, layer in module.named_modules() if isinstance(layer, LoraLayer)}
    for name, layer in layers.items():
        if len(layer.lora_A) != 1:
            raise ValueError(f"{name}: holds {len(layer.lora_A)} LoRA adapters ({list(layer.lora_A)}); export one at a time")
    return layers


def _text_model_path(name: str) -> str:
    return name if name.startswith("text_model.") else f"text_model.{name}"


def kohya_state_dict(
    unet: torch.nn.Module, text_encoder: torch.nn.Module | None = None, text_encoder_2: torch.nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """The adapters of ``unet`` (and of the text encoders that have any) under kohya's names,
    as float32 CPU copies; SDXL's names when ``text_encoder_2`` is given. Raises if the UNet
    has no LoRA layers."""
    unet_layers = _lora_layers(unet)
    if not unet_layers:
        raise ValueError("the UNet has no LoRA layers: was the LoRA method set up (and its weights loaded)?")
    if text_encoder_2 is None:
        prefixed = [(UNET_PREFIX, name, layer) for name, layer in unet_layers.items()]
        encoders = [(TEXT_ENCODER_PREFIX, text_encoder)]
    else:
        table = sd_keys.unet_module_table(unet.config)
        prefixed = [(UNET_PREFIX, sd_keys.original_path(name, table, "UNet"), layer) for name, layer in unet_layers.items()]
        encoders = list(zip(SDXL_TEXT_ENCODER_PREFIXES, (text_encoder, text_encoder_2)))
    for prefix, encoder in encoders:
        if encoder is not None:
            prefixed += [(prefix, _text_model_path(name), layer) for name, layer in _lora_layers(encoder).items()]

    tensors = {}
    for prefix, path, layer in prefixed:
        (adapter,) = layer.lora_A.keys()
        if layer.use_rslora[adapter]:
            raise ValueError(f"{path}: rank-stabilised LoRA scales by alpha / sqrt(rank), which kohya files cannot express")
        name = prefix + path.replace(".", "_")
        tensors[f"{name}.lora_down.weight"] = layer.lora_A[adapter].weight.detach().float().cpu()
        tensors[f"{name}.lora_up.weight"] = layer.lora_B[adapter].weight.detach().float().cpu()
        tensors[f"{name}.alpha"] = torch.tensor(float(layer.lora_alpha[adapter]))
    return tensors


def _network_settings(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """kohya's ss_network_* metadata from the tensors: linear layers give dim and alpha, 3x3
    convolutions (LoCon) give conv_dim and conv_alpha in ss_network_args."""
    linear, conv = {}, {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            alpha = tensors[key.replace(".lora_down.weight", ".alpha")].item()
            is_conv = down.ndim == 4 and tuple(down.shape[2:]) != (1, 1)
            (conv if is_conv else linear)[(down.shape[0], alpha)] = True
    (dim, alpha), *_ = linear or conv
    settings = {"ss_network_module": "networks.lora", "ss_network_dim": str(dim), "ss_network_alpha": f"{alpha:g}"}
    if conv:
        (conv_dim, conv_alpha), *_ = conv
        settings["ss_network_args"] = json.dumps({"conv_dim": str(conv_dim), "conv_alpha": f"{conv_alpha:g}"})
    return settings


def export_kohya_lora(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    out_path: str | Path,
    *,
    dtype: str = "fp16",
    base_model: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    text_encoder_2: torch.nn.Module | None = None,
) -> Path:
    """Write the LoRA adapters of ``unet`` (and of ``text_encoder``, and SDXL's
    ``text_encoder_2``, where they have any) to ``out_path`` (``.safetensors``) in kohya's
    layout, in ``dtype`` ("fp16" or "fp32"). The text encoders are needed even without
    adapters: they tell SD1.x, SD2.x and SDXL apart for the names and the metadata.

    Pass the plain models (``accelerator.unwrap_model``) with their peft adapters, e.g. after
    `LoraMethod.setup` and `load_weights`. Metadata: kohya's ``ss_network_module``,
    ``ss_network_dim``, ``ss_network_alpha``, ``ss_network_args`` (LoCon), ``ss_base_model_version``,
    ``ss_v2``, ``ss_output_name``, ``ss_sd_model_name`` (``base_model``), then ``metadata``
    (non-string values as JSON). The models are not changed. Returns ``out_path``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path}: a kohya LoRA export must end in .safetensors")
    tensors = kohya_state_dict(unet, text_encoder, text_encoder_2)
    variant = infer_variant(text_encoder, text_encoder_2)
    info = {
        **_network_settings(tensors),
        "ss_base_model_version": BASE_MODEL_VERSIONS[variant],
        "ss_v2": str(variant == "sd2"),
        "ss_output_name": out_path.stem,
        "ss_sd_model_name": base_model or "",
    }
    info.update({str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()})
    info["edlib_version"] = __version__
    write_safetensors_atomic({k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}, out_path, info)
    return out_path
