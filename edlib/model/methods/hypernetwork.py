"""Hypernetwork: small networks that transform the text conditioning before every
cross-attention's key and value projections, trained while the whole model stays frozen, in
the layout AUTOMATIC1111 and ComfyUI load (see `edlib.model.hypernetwork_layers`).

It has networks for one context width: the UNet's `cross_attention_dim` (768 for SD1.x, 1024
for SD2.x, 2048 for SDXL, whose two text encoders' outputs are joined). A1111's UI can add
networks for the self-attention widths (320, 640, 1280) too; edlib trains the text-context ones,
the hypernetworks people share. Settings are the `hypernetwork_*` config keys (A1111's names);
it trains at `unet_lr`, and its initial weights come from the run's `seed`.

The base model is kept in the mixed-precision dtype (half the memory), the hypernetwork in
fp32, as LoRA adapters are; a checkpoint holds only the hypernetwork (`hypernetwork.safetensors`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from edlib.model.hypernetwork_layers import Hypernetwork, HypernetworkSpec, attach, find_hypernetwork
from edlib.model.methods.base import Method

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "hypernetwork"
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def context_width(unet) -> int:
    """The width of the text context the UNet's cross-attention reads."""
    width = unet.config.cross_attention_dim
    if not isinstance(width, int):
        raise ValueError(f"hypernetwork: this UNet has per-block cross-attention widths {width}; only one width is supported")
    return width


class HypernetworkMethod(Method):
    """An A1111 hypernetwork for the UNet's text context, trained at `unet_lr`."""

    name = "hypernetwork"

    def trainable_module_names(self, models) -> set[str]:
        # The hypernetwork lives inside the UNet (so the loop places, wraps and samples it
        # with the UNet); only its parameters reach the optimizer.
        return {"unet"}

    def setup(self, models) -> None:
        config = self.config
        if getattr(models, "flow_matching", False):
            raise ValueError(f"method: hypernetwork is for SD1.x, SD2.x and SDXL (UNet attention), not {models.family.upper()}")
        spec = HypernetworkSpec.from_config(config)
        if spec.is_layer_norm and spec.activation_func != "linear" and not spec.activate_output:
            log.warning(
                "hypernetwork: with layer norm and a non-linear activation, ComfyUI also applies the activation after "
                "the last layer (AUTOMATIC1111 does not), so the two draw differently; for ComfyUI set "
                "hypernetwork_activate_output: true or hypernetwork_is_layer_norm: false"
            )
        for name in models.module_names:
            getattr(models, name).requires_grad_(False)
        base_dtype = _DTYPES.get(config.mixed_precision, torch.float32)
        if models.unet.dtype != base_dtype:
            models.unet.to(dtype=base_dtype)
        # Its own generator: the initial weights depend on the seed alone, not on what drew before.
        generator = torch.Generator().manual_seed(config.seed % 2**63)
        hypernetwork = Hypernetwork([context_width(models.unet)], spec).initialise(generator)
        hypernetwork.set_strength(config.hypernetwork_strength)
        attach(models.unet, hypernetwork).requires_grad_(True)

    def hypernetwork(self, models, unwrap=lambda m: m) -> Hypernetwork:
        found = find_hypernetwork(unwrap(models.unet))
        if found is None:
            raise ValueError("hypernetwork: the UNet has none attached; call setup(models) first")
        return found

    def param_groups(self, models) -> list[dict[str, Any]]:
        return [{"name": CHECKPOINT_FILE, "params": list(self.hypernetwork(models).parameters()), "lr": self.config.unet_lr}]

    def checkpoint_weights(self, models, unwrap=lambda m: m) -> dict[str, dict[str, torch.Tensor]]:
        hypernetwork = self.hypernetwork(models, unwrap)
        return {CHECKPOINT_FILE: {key: value.detach() for key, value in hypernetwork.state_dict().items()}}

    def load_weights(self, models, weights: dict[str, dict[str, torch.Tensor]], unwrap=lambda m: m) -> None:
        if set(weights) != {CHECKPOINT_FILE}:
            raise ValueError(
                f"checkpoint holds weights for {sorted(weights)} but a hypernetwork run saves only "
                f"[{CHECKPOINT_FILE!r}]: was it saved with another method?"
            )
        hypernetwork = self.hypernetwork(models, unwrap)
        saved, own = weights[CHECKPOINT_FILE], hypernetwork.state_dict()
        wrong = sorted(k for k in own if k not in saved or saved[k].shape != own[k].shape)
        extra = sorted(set(saved) - set(own))
        if wrong or extra:
            raise ValueError(
                "checkpoint: its hypernetwork does not match this config (hypernetwork_layer_structure, "
                f"_activation_func, _is_layer_norm or the model changed?); missing or misshapen {wrong[:3]}, "
                f"unexpected {extra[:3]}"
            )
        hypernetwork.load_state_dict(saved, strict=True)
