"""SD3 and FLUX LoRA files in the two layouts people load.

**diffusers/PEFT** (``peft-lora``; the default for SD3): diffusers' own LoRA layout,
``transformer.<module path>.lora_A.weight`` / ``.lora_B.weight`` and the same under
``text_encoder.`` (and SD3's ``text_encoder_2.``), what ``load_lora_weights`` of
``FluxPipeline`` and ``StableDiffusion3Pipeline`` read natively and ComfyUI maps too. The file
carries no alpha tensors, and loaders differ in where they look for one (diffusers: the
``lora_adapter_metadata`` JSON; ComfyUI: ``.alpha`` keys, else scale 1), so each adapter's
alpha / rank is folded into its ``lora_B`` and the metadata says alpha = rank: every loader
then applies exactly what training did (ai-toolkit saves the same way).

**kohya** (``kohya-lora``; the default for FLUX): sd-scripts' names over FLUX's original
(BFL) modules, ``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight``, ``.lora_up.weight``,
``.alpha``, and ``lora_te1_...`` for CLIP-L: what ComfyUI, Forge and diffusers' kohya-FLUX
converter load. BFL fuses layers diffusers keeps apart (q, k and v into ``qkv``; in the single
blocks q, k, v and the MLP input into ``linear1``), so their adapters are written as one
adapter of the summed rank whose up matrix is block diagonal: its product is exactly the
separate updates stacked, and diffusers' converter recognises the form and splits it back.
SD3 has no kohya export: diffusers ignores kohya SD3 LoRAs without a word (sd-scripts #1743),
so an SD3 LoRA is written in the format both diffusers and ComfyUI load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from edlib import __version__
from edlib.export.kohya_lora import _lora_layers, _text_model_path
from edlib.export.single_file import DTYPES, write_safetensors_atomic

# Module names of diffusers' FLUX transformer -> (kohya name, part, parts) in the BFL layout.
_DOUBLE = {
    "attn.to_q": ("img_attn_qkv", 0, 3),
    "attn.to_k": ("img_attn_qkv", 1, 3),
    "attn.to_v": ("img_attn_qkv", 2, 3),
    "attn.add_q_proj": ("txt_attn_qkv", 0, 3),
    "attn.add_k_proj": ("txt_attn_qkv", 1, 3),
    "attn.add_v_proj": ("txt_attn_qkv", 2, 3),
    "attn.to_out.0": ("img_attn_proj", 0, 1),
    "attn.to_add_out": ("txt_attn_proj", 0, 1),
    "ff.net.0.proj": ("img_mlp_0", 0, 1),
    "ff.net.2": ("img_mlp_2", 0, 1),
    "ff_context.net.0.proj": ("txt_mlp_0", 0, 1),
    "ff_context.net.2": ("txt_mlp_2", 0, 1),
    "norm1.linear": ("img_mod_lin", 0, 1),
    "norm1_context.linear": ("txt_mod_lin", 0, 1),
}
_SINGLE = {
    "attn.to_q": ("linear1", 0, 4),
    "attn.to_k": ("linear1", 1, 4),
    "attn.to_v": ("linear1", 2, 4),
    "proj_mlp": ("linear1", 3, 4),
    "proj_out": ("linear2", 0, 1),
    "norm.linear": ("modulation_lin", 0, 1),
}
# The parts of each fused BFL layer, in the order BFL stacks them (diffusers' converter splits
# in this order), as diffusers module names relative to the block.
_FUSED_PARTS = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
}


def _adapter(layer) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    (name,) = layer.lora_A.keys()
    if layer.use_rslora[name]:
        raise ValueError("rank-stabilised LoRA scales by alpha / sqrt(rank), which these files cannot express")
    down = layer.lora_A[name].weight.detach().float().cpu()
    up = layer.lora_B[name].weight.detach().float().cpu()
    return down, up, float(layer.lora_alpha[name]), down.shape[0]


# -- diffusers / PEFT ---------------------------------------------------------------------------


def peft_state_dict(modules: Mapping[str, torch.nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``{prefix: module}`` (``transformer``, ``text_encoder``, ...) -> diffusers' LoRA tensors
    with each alpha / rank folded into ``lora_B``, and the adapter metadata per prefix."""
    tensors, metadata = {}, {}
    for prefix, module in modules.items():
        layers = _lora_layers(module)
        if not layers:
            continue
        ranks = set()
        for path, layer in layers.items():
            down, up, alpha, rank = _adapter(layer)
            tensors[f"{prefix}.{path}.lora_A.weight"] = down
            tensors[f"{prefix}.{path}.lora_B.weight"] = up * (alpha / rank)
            ranks.add(rank)
        config = next(iter(module.peft_config.values())).to_dict()
        rank = max(ranks)
        config.update(r=rank, lora_alpha=rank, alpha_pattern={}, rank_pattern={p: r for p, r in _ranks(layers).items() if r != rank})
        config["target_modules"] = sorted(layers)
        metadata.update({f"{prefix}.{key}": sorted(value) if isinstance(value, set) else value for key, value in config.items()})
    if not tensors:
        raise ValueError("the transformer has no LoRA layers: was the LoRA method set up (and its weights loaded)?")
    return tensors, metadata


def _ranks(layers) -> dict[str, int]:
    return {path: _adapter(layer)[3] for path, layer in layers.items()}


def export_peft_lora(modules: Mapping[str, torch.nn.Module], out_path: Path, *, dtype: str, metadata: Mapping[str, Any]) -> Path:
    """Write the adapters of ``modules`` (see `peft_state_dict`) as one diffusers LoRA file."""
    tensors, adapter_metadata = peft_state_dict(modules)
    info = {"format": "pt", "lora_adapter_metadata": json.dumps(adapter_metadata, sort_keys=True, default=str)}
    info.update(_string_metadata(metadata))
    write_safetensors_atomic({k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}, out_path, info)
    return out_path


def _string_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    info = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    info["edlib_version"] = __version__
    return info


# -- kohya (FLUX) -------------------------------------------------------------------------------


def _bfl_name(path: str) -> tuple[str, str, int, str]:
    """(kohya name, BFL layer name, part, block prefix) of a LoRA layer of diffusers' FLUX
    transformer."""
    for blocks, table, bfl in (("transformer_blocks", _DOUBLE, "double_blocks"), ("single_transformer_blocks", _SINGLE, "single_blocks")):
        if path.startswith(blocks + "."):
            index, _, rest = path[len(blocks) + 1 :].partition(".")
            if rest in table:
                name, part, _ = table[rest]
                return f"lora_unet_{bfl}_{index}_{name}", name, part, f"{blocks}.{index}."
    raise ValueError(f"{path}: no kohya (BFL) name for this FLUX layer (adapters outside the blocks: export peft-lora)")


def kohya_flux_state_dict(transformer: torch.nn.Module, text_encoder: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The adapters of a FLUX transformer (and CLIP-L) under sd-scripts' names (module docstring)."""
    layers = _lora_layers(transformer)
    if not layers:
        raise ValueError("the transformer has no LoRA layers: was the LoRA method set up (and its weights loaded)?")
    groups: dict[str, dict[int, tuple]] = {}
    where: dict[str, tuple[str, str]] = {}
    for path, layer in layers.items():
        name, layer_name, part, block = _bfl_name(path)
        groups.setdefault(name, {})[part] = _adapter(layer)
        where[name] = (layer_name, block)
    modules = dict(transformer.named_modules())
    tensors = {}
    for name, adapters in groups.items():
        layer_name, block = where[name]
        if layer_name in _FUSED_PARTS:
            dims = [modules[block + part].out_features for part in _FUSED_PARTS[layer_name]]
            down, up, alpha, _ = _block_diagonal(adapters, dims)
        else:
            down, up, alpha, _ = adapters[0]
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    if text_encoder is not None:
        for path, layer in _lora_layers(text_encoder).items():
            down, up, alpha, _ = _adapter(layer)
            name = "lora_te1_" + _text_model_path(path).replace(".", "_")
            tensors.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(alpha)})
    return tensors


def _block_diagonal(adapters: dict[int, tuple], dims: list[int]):
    """One adapter for a fused layer from its parts' (down, up, alpha, rank): downs stacked,
    ups on the block diagonal (zero rows for a part without an adapter). Every part scales by
    alpha / rank; the fused rank is their sum, so its alpha is theirs times the part count."""
    scales = {alpha / rank for _, _, alpha, rank in adapters.values()}
    if len(scales) != 1:
        raise ValueError("the parts of a fused FLUX layer have different alpha / rank; kohya files give one per layer")
    present = sorted(adapters)
    total = sum(adapters[p][3] for p in present)
    up = torch.zeros(sum(dims), total)
    column = 0
    for p in present:
        _, part_up, _, rank = adapters[p]
        row = sum(dims[:p])
        up[row : row + dims[p], column : column + rank] = part_up
        column += rank
    down = torch.cat([adapters[p][0] for p in present])
    return down, up, scales.pop() * total, total


def export_kohya_flux_lora(
    transformer,
    text_encoder,
    out_path: Path,
    *,
    dtype: str,
    base_model: str,
    network: tuple[int, float],
    metadata: Mapping[str, Any],
) -> Path:
    """Write a FLUX LoRA in kohya's layout; ``network``: the run's (rank, alpha) for kohya's
    metadata (fused layers carry their summed rank and matching alpha in their tensors)."""
    tensors = kohya_flux_state_dict(transformer, text_encoder)
    info = {
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": str(network[0]),
        "ss_network_alpha": f"{network[1]:g}",
        "ss_base_model_version": "flux1",
        "ss_output_name": out_path.stem,
        "ss_sd_model_name": base_model,
        **_string_metadata(metadata),
    }
    write_safetensors_atomic({k: v.to(DTYPES[dtype]).contiguous() for k, v in tensors.items()}, out_path, info)
    return out_path
