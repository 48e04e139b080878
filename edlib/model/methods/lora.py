"""LoRA and LoCon: train small low-rank adapters beside a frozen model, through peft.

Which layers get an adapter follows kohya's sd-scripts (`networks/lora.py`), because the
result is meant to be used in AUTOMATIC1111 and ComfyUI, whose users expect kohya LoRAs:

- LoRA: every Linear and 1x1 Conv2d inside the UNet's transformer blocks
  (`Transformer2DModel`: attention q/k/v/out, feed-forward, proj_in/proj_out), at rank
  `network_dim` and alpha `network_alpha`.
- LoCon (`conv_dim` set): also the layers of the ResNet blocks and the down/upsamplers; their
  3x3 convolutions at rank `conv_dim` and alpha `conv_alpha`, their Linear and 1x1 layers
  (time embedding projection, shortcut) at `network_dim`/`network_alpha`, as kohya does.
- Text encoder (`text_encoder_lr` > 0; for SDXL's second one `text_encoder_2_lr`, by default
  the same): every Linear inside the CLIP attention and MLP blocks (q/k/v/out projections,
  fc1, fc2).

- SD3/FLUX transformer: the layers of the `lora_targets` preset (`lora_targets.py`).
- LoRA+ (`loraplus_lr_ratio`): the up (B) matrices train at that multiple of their group's rate.
- `fp8_base`: the frozen base layers keep their weights in fp8 and compute in the mixed-precision
  dtype (diffusers' layerwise casting), set up before the adapters so these stay fp32.

The adapter's output is scaled by alpha / rank, in peft as in kohya, so the two agree.
The base model stays frozen, in the mixed-precision dtype (half the memory of fp32 when
training in bf16 or fp16); the adapters train in fp32. Only the adapter parameters go to the
optimizer and into checkpoints, so a resume state is a few megabytes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from edlib.model.methods.base import Method

log = logging.getLogger(__name__)

# Module classes whose layers get adapters, by class name as kohya matches them.
UNET_ATTENTION_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPMLP")

# Adapter learning rates below this are almost certainly full fine-tune rates left in the
# config (unet_lr's default is 1e-6): a LoRA barely moves at them.
LOW_LORA_LR = 1e-5

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def adapter_layers(model: torch.nn.Module, block_classes: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Names of the layers inside blocks of ``block_classes`` that get an adapter:
    ``(linear_layers, conv_layers)``. Linear layers and 1x1 convolutions (which are linear
    maps per pixel) take the network rank; larger convolutions take the conv rank."""
    linear, conv = set(), set()
    for block_name, block in model.named_modules():
        if type(block).__name__ not in block_classes:
            continue
        for child_name, child in block.named_modules():
            name = f"{block_name}.{child_name}" if block_name else child_name
            if isinstance(child, torch.nn.Linear):
                linear.add(name)
            elif isinstance(child, torch.nn.Conv2d):
                (linear if child.kernel_size == (1, 1) else conv).add(name)
    return sorted(linear), sorted(conv)


def lora_config(model: torch.nn.Module, block_classes: tuple[str, ...], settings, layers: list[str] | None = None) -> Any:
    """The peft `LoraConfig` for ``model``: explicit layer names (so exactly kohya's layers
    train, or the given ``layers``), with the conv rank and alpha given per layer through
    peft's rank/alpha patterns."""
    from peft import LoraConfig

    linear, conv = adapter_layers(model, block_classes) if layers is None else (layers, [])
    if not linear and not conv:
        raise ValueError(f"no layers for LoRA found in {type(model).__name__} (looked inside {', '.join(block_classes)})")
    conv_dim = settings.conv_dim or settings.network_dim
    conv_alpha = settings.conv_alpha if settings.conv_dim else settings.network_alpha
    # Patterns are regular expressions matched against the end of a layer name.
    return LoraConfig(
        r=settings.network_dim,
        lora_alpha=settings.network_alpha,
        target_modules=linear + conv,
        rank_pattern={re.escape(name): conv_dim for name in conv},
        alpha_pattern={re.escape(name): conv_alpha for name in conv},
        init_lora_weights=True,  # lora_up starts at zero: the adapted model starts as the base
    )


def adapter_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of ``module`` by name (peft names them ``...lora_A.default.weight``)."""
    return {name: param for name, param in module.named_parameters() if ".lora_A." in name or ".lora_B." in name}


class LoraMethod(Method):
    """LoRA (or LoCon, with `conv_dim`) on the UNet, and on the text encoder when
    `text_encoder_lr` > 0.

    Reads from the config: `network_dim`, `network_alpha`, `conv_dim` (None: plain LoRA),
    `conv_alpha`, `unet_lr`, `text_encoder_lr`, `mixed_precision`.
    """

    name = "lora"

    def trainable_module_names(self, models) -> set[str]:
        return {"unet", *self.text_encoder_lrs(models)}

    def setup(self, models) -> None:
        if self.config.network_dim < 1:
            raise ValueError(f"network_dim: must be at least 1, got {self.config.network_dim}")
        if self.config.conv_dim is not None and self.config.conv_dim < 1:
            raise ValueError(f"conv_dim: must be at least 1 or null (plain LoRA), got {self.config.conv_dim}")
        for name, lr in (("unet_lr", self.config.unet_lr), ("text_encoder_lr", self.config.text_encoder_lr)):
            if 0 < lr < LOW_LORA_LR:
                log.warning(f"{name}: {lr:g} is a full fine-tune rate; LoRA usually trains at 1e-4 to 5e-4")

        base_dtype = _DTYPES.get(self.config.mixed_precision, torch.float32)
        for name in models.module_names:
            getattr(models, name).requires_grad_(False)
        blocks = UNET_ATTENTION_BLOCKS + (UNET_CONV_BLOCKS if self.config.conv_dim else ())
        layers = None
        if models.flow_matching:
            from edlib.model.flow_config import FLOW_DEFAULTS
            from edlib.model.methods.lora_targets import transformer_lora_layers

            preset = getattr(self.config, "lora_targets", None) or FLOW_DEFAULTS[models.family]["lora_targets"]
            layers = transformer_lora_layers(models.unet, preset)
        self._add_adapter(models.unet, blocks, base_dtype, layers, fp8=getattr(self.config, "fp8_base", False))
        for name in self.text_encoder_lrs(models):
            self._add_adapter(getattr(models, name), TEXT_ENCODER_BLOCKS, base_dtype)

    def _add_adapter(self, module, blocks: tuple[str, ...], base_dtype: torch.dtype, layers=None, fp8: bool = False) -> None:
        if module.dtype != base_dtype:
            module.to(dtype=base_dtype)
        if fp8:
            # Before the adapters: the hooks go on the base layers only, which peft then wraps.
            module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=base_dtype)
        module.add_adapter(lora_config(module, blocks, self.config, layers))
        for param in adapter_parameters(module).values():
            # fp32 adapters: their small updates would round away in half precision.
            param.data = param.data.float()
            param.requires_grad_(True)

    def param_groups(self, models) -> list[dict[str, Any]]:
        modules = {"unet": self.config.unet_lr, **self.text_encoder_lrs(models)}
        ratio = getattr(self.config, "loraplus_lr_ratio", None)
        groups = []
        for name, lr in modules.items():
            params = adapter_parameters(getattr(models, name))
            if ratio is None:
                groups.append({"name": f"{name}_lora", "params": list(params.values()), "lr": lr})
                continue
            # LoRA+: B (lora_up) learns faster than A; both start their own group.
            groups.append({"name": f"{name}_lora_A", "params": [p for k, p in params.items() if ".lora_A." in k], "lr": lr})
            groups.append({"name": f"{name}_lora_B", "params": [p for k, p in params.items() if ".lora_B." in k], "lr": lr * ratio})
        return groups

    def checkpoint_weights(self, models, unwrap=lambda m: m) -> dict[str, dict[str, torch.Tensor]]:
        return {
            f"{name}_lora": {key: param.detach() for key, param in adapter_parameters(unwrap(module)).items()}
            for name, module in self.trainable_modules(models).items()
        }

    def load_weights(self, models, weights: dict[str, dict[str, torch.Tensor]], unwrap=lambda m: m) -> None:
        modules = {f"{name}_lora": unwrap(module) for name, module in self.trainable_modules(models).items()}
        if set(weights) != set(modules):
            raise ValueError(
                f"checkpoint holds weights for {sorted(weights)} but LoRA trains {sorted(modules)}: was it saved "
                "with another method, or with a different text_encoder_lr (0 or not)?"
            )
        for file_name, module in modules.items():
            params = adapter_parameters(module)
            saved = weights[file_name]
            if set(saved) != set(params):
                missing, extra = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
                raise ValueError(
                    f"checkpoint {file_name}: adapter layers differ from this config (network_dim, conv_dim or "
                    f"the model changed?); missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                    f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}"
                )
            with torch.no_grad():
                for key, param in params.items():
                    if saved[key].shape != param.shape:
                        raise ValueError(
                            f"checkpoint {file_name}: {key} has shape {tuple(saved[key].shape)}, this config "
                            f"makes {tuple(param.shape)} (network_dim or conv_dim changed?)"
                        )
                    param.copy_(saved[key])
