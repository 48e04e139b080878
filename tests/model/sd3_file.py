"""An SD3 transformer in the original (Stability) single-file layout, written from a diffusers
one: the inverse of diffusers' `convert_sd3_transformer_checkpoint_to_diffusers`, so a test can
load a tiny SD3 single file through the path a user's `sd3.5_medium.safetensors` takes."""

from __future__ import annotations

import torch


def _swap_halves(weight: torch.Tensor) -> torch.Tensor:
    """diffusers' AdaLayerNormContinuous orders (scale, shift), SD3's original (shift, scale)."""
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def original_sd3_state_dict(transformer) -> dict[str, torch.Tensor]:
    d = {k: v.detach().clone() for k, v in transformer.state_dict().items()}
    config = transformer.config
    out = {
        "pos_embed": d["pos_embed.pos_embed"],
        "x_embedder.proj.weight": d["pos_embed.proj.weight"],
        "x_embedder.proj.bias": d["pos_embed.proj.bias"],
        "context_embedder.weight": d["context_embedder.weight"],
        "context_embedder.bias": d["context_embedder.bias"],
        "final_layer.linear.weight": d["proj_out.weight"],
        "final_layer.linear.bias": d["proj_out.bias"],
        "final_layer.adaLN_modulation.1.weight": _swap_halves(d["norm_out.linear.weight"]),
        "final_layer.adaLN_modulation.1.bias": _swap_halves(d["norm_out.linear.bias"]),
    }
    for ours, theirs in (("timestep_embedder", "t_embedder"), ("text_embedder", "y_embedder")):
        for k, n in (("linear_1", 0), ("linear_2", 2)):
            for p in ("weight", "bias"):
                out[f"{theirs}.mlp.{n}.{p}"] = d[f"time_text_embed.{ours}.{k}.{p}"]
    last = config.num_layers - 1
    for i in range(config.num_layers):
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        for p in ("weight", "bias"):
            out[f"{x}attn.qkv.{p}"] = torch.cat([d[f"{b}attn.to_{q}.{p}"] for q in "qkv"])
            out[f"{c}attn.qkv.{p}"] = torch.cat([d[f"{b}attn.add_{q}_proj.{p}"] for q in "qkv"])
            out[f"{x}attn.proj.{p}"] = d[f"{b}attn.to_out.0.{p}"]
            out[f"{x}adaLN_modulation.1.{p}"] = d[f"{b}norm1.linear.{p}"]
            context_norm = d[f"{b}norm1_context.linear.{p}"]
            out[f"{c}adaLN_modulation.1.{p}"] = _swap_halves(context_norm) if i == last else context_norm
            out[f"{x}mlp.fc1.{p}"] = d[f"{b}ff.net.0.proj.{p}"]
            out[f"{x}mlp.fc2.{p}"] = d[f"{b}ff.net.2.{p}"]
            if i != last:
                out[f"{c}attn.proj.{p}"] = d[f"{b}attn.to_add_out.{p}"]
                out[f"{c}mlp.fc1.{p}"] = d[f"{b}ff_context.net.0.proj.{p}"]
                out[f"{c}mlp.fc2.{p}"] = d[f"{b}ff_context.net.2.{p}"]
            if i in config.dual_attention_layers:
                out[f"{x}attn2.qkv.{p}"] = torch.cat([d[f"{b}attn2.to_{q}.{p}"] for q in "qkv"])
                out[f"{x}attn2.proj.{p}"] = d[f"{b}attn2.to_out.0.{p}"]
        if config.qk_norm:
            out[f"{x}attn.ln_q.weight"] = d[f"{b}attn.norm_q.weight"]
            out[f"{x}attn.ln_k.weight"] = d[f"{b}attn.norm_k.weight"]
            out[f"{c}attn.ln_q.weight"] = d[f"{b}attn.norm_added_q.weight"]
            out[f"{c}attn.ln_k.weight"] = d[f"{b}attn.norm_added_k.weight"]
            if i in config.dual_attention_layers:
                out[f"{x}attn2.ln_q.weight"] = d[f"{b}attn2.norm_q.weight"]
                out[f"{x}attn2.ln_k.weight"] = d[f"{b}attn2.norm_k.weight"]
    return {f"model.diffusion_model.{k}": v.contiguous() for k, v in out.items()}
