"""Block swapping: the frozen weights of some transformer blocks wait in CPU memory and come
to the GPU only while their block computes, so a LoRA on FLUX.1 (12B parameters, 24 GB in
bf16) fits a smaller card. kohya's sd-scripts calls it ``--blocks_to_swap``; OneTrainer
"layer offloading".

How: a forward pre-hook on each swapped block puts a GPU copy of each frozen weight in the
place of the CPU parameter, and a forward hook puts the CPU parameter back. The autograd graph
keeps the copies it needs and nothing else does, so with gradient checkpointing (required by
the config) a block's copies live only while it computes, forward, and again when the backward
pass recomputes it (the hooks fire then too). Trainable parameters (the LoRA adapters) stay on
the GPU. The CPU weights are pinned on a CUDA machine, so the copies run at full PCIe speed;
each copy is issued when its block starts (no prefetch of the next block yet: slower than
kohya's overlapped swap). Which blocks: the last ``count`` of the double-stream blocks followed
by the single-stream ones (FLUX) or of the joint blocks (SD3).
"""

from __future__ import annotations

import torch

HOME = torch.device("cpu")


def swap_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer's blocks in the order they run."""
    blocks = list(getattr(transformer, "transformer_blocks", ()))
    blocks += list(getattr(transformer, "single_transformer_blocks", ()))
    return blocks


def enable_block_swap(transformer: torch.nn.Module, count: int, device: torch.device) -> list[torch.nn.Module]:
    """Swap the last ``count`` blocks of ``transformer`` (already on ``device``) as the module
    docstring says; returns the swapped blocks."""
    blocks = swap_blocks(transformer)
    if not 0 < count < len(blocks):
        raise ValueError(f"blocks_to_swap: {count} is out of range for a transformer of {len(blocks)} blocks (1..{len(blocks) - 1})")
    device = torch.device(device)
    swapped = blocks[-count:]
    for block in swapped:
        frozen = [(module, name) for module in block.modules() for name, p in module.named_parameters(recurse=False) if not p.requires_grad]
        for module, name in frozen:
            param = module._parameters[name]
            home = param.data.to(HOME)
            param.data = home.pin_memory() if device.type == "cuda" else home
        block._edlib_swap = (frozen, device)
        block.register_forward_pre_hook(_bring)
        block.register_forward_hook(_return)
    return swapped


def _bring(block, args):
    frozen, device = block._edlib_swap
    for module, name in frozen:
        param = module._parameters[name]
        # A plain tensor in the parameter's place for this call: the graph holds it, the
        # module gets its CPU parameter back right after (see `_return`).
        module._edlib_home = getattr(module, "_edlib_home", {})
        module._edlib_home[name] = param
        module._parameters[name] = param.to(device, non_blocking=True)


def _return(block, args, output):
    frozen, _ = block._edlib_swap
    for module, name in frozen:
        module._parameters[name] = module._edlib_home.pop(name)
    return output
