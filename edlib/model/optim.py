"""Optimizers by name, and the parameter groups of a full fine-tune.

Each optimizer comes from the package made for it (torch, bitsandbytes, lion-pytorch,
prodigyopt, transformers), imported only when asked for, so a missing optional package is a
clear message naming what to install rather than an ImportError at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch

from edlib.model.config import OPTIMIZERS, STOCHASTIC_ROUNDING_OPTIMIZERS


def _import(module: str, attribute: str, optimizer: str, install: str):
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError:
        raise ValueError(f"optimizer: {optimizer} needs the {module} package: pip install {install}") from None


def _parameters(param_groups: list[dict[str, Any]]) -> Iterable[torch.Tensor]:
    return (p for group in param_groups for p in group["params"])


def _adamw(param_groups, args):
    # The fused kernel is faster and gives the same update; it needs every parameter on CUDA,
    # so move the models to the GPU before building the optimizer to get it.
    defaults = {}
    if "fused" not in args and "foreach" not in args and all(p.is_cuda for p in _parameters(param_groups)):
        defaults["fused"] = True
    return torch.optim.AdamW(param_groups, **{**defaults, **args})


def _adamw8bit(param_groups, args):
    if not torch.cuda.is_available():
        raise ValueError("optimizer: adamw8bit needs a CUDA GPU (bitsandbytes); use adamw on this machine")
    return _import("bitsandbytes.optim", "AdamW8bit", "adamw8bit", "edlib-sd-trainer[gpu]")(param_groups, **args)


def _lion(param_groups, args):
    return _import("lion_pytorch", "Lion", "lion", "lion-pytorch")(param_groups, **args)


def _prodigy(param_groups, args):
    prodigy = _import("prodigyopt", "Prodigy", "prodigy", "prodigyopt")
    # Prodigy estimates one step size for all groups; lr is only a multiplier (1.0).
    rates = {group["lr"] for group in param_groups}
    if len(rates) > 1:
        raise ValueError(
            f"optimizer: prodigy needs one learning rate for all trained parts (usually 1.0), got {sorted(rates)}: "
            "set text_encoder_lr equal to unet_lr, or 0 to freeze the text encoder"
        )
    return prodigy(param_groups, **args)


def _adafactor(param_groups, args):
    from transformers.optimization import Adafactor

    # Adafactor's defaults pick their own step size and ignore the learning rate; use the
    # configured rate and LR schedule instead, as fine-tuning recipes do.
    defaults = {"scale_parameter": False, "relative_step": False, "warmup_init": False}
    return Adafactor(param_groups, **{**defaults, **args})


_BUILDERS = {"adamw": _adamw, "adamw8bit": _adamw8bit, "lion": _lion, "prodigy": _prodigy, "adafactor": _adafactor}


def _stochastic_rounding(name: str, param_groups, args):
    """edlib's AdamW (moments in bf16) or AdamW8bit (8-bit block-wise moments) for bf16
    weights: the update is computed in fp32 and the new bf16 weight rounded up or down at
    random, in proportion to where the exact value lies between the two, so the expected
    weight is the exact one (`edlib.model.sr_optim`). bitsandbytes and torch round to nearest,
    which drops every update under half a bf16 step (about 1/512 of the weight)."""
    from edlib.model.sr_optim import AdamW8bitStochasticRounding, AdamWStochasticRounding

    classes = {"adamw": AdamWStochasticRounding, "adamw8bit": AdamW8bitStochasticRounding}
    if name not in classes:
        raise ValueError(f"stochastic_rounding: implemented for {', '.join(STOCHASTIC_ROUNDING_OPTIMIZERS)}, not {name!r}")
    return classes[name](param_groups, **args)


def make_optimizer(
    name: str,
    param_groups: list[dict[str, Any]],
    args: dict[str, Any] | None = None,
    *,
    stochastic_rounding: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``param_groups`` (each with its ``lr``), with extra keyword
    arguments ``args`` (the config's ``optimizer_args``, e.g. ``weight_decay``, ``betas``).
    ``stochastic_rounding``: bf16 weights updated with stochastic rounding (``full_bf16``)."""
    if name not in _BUILDERS:
        raise ValueError(f"optimizer: unknown value {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    args = dict(args or {})
    if "lr" in args:
        raise ValueError("optimizer_args: lr is set by unet_lr and text_encoder_lr, not here")
    try:
        if stochastic_rounding:
            return _stochastic_rounding(name, param_groups, args)
        return _BUILDERS[name](param_groups, args)
    except TypeError as error:  # an argument the optimizer does not take
        raise ValueError(f"optimizer_args: {error} (optimizer {name})") from None


def param_groups(models, text_encoder_lrs: dict[str, float], unet_lr: float) -> list[dict[str, Any]]:
    """Parameter groups of a full fine-tune: the UNet at ``unet_lr`` and each text encoder
    named in ``text_encoder_lrs`` at its rate. A text encoder left out is frozen
    (``requires_grad`` False), so it stays bit-identical and costs no optimizer memory. The
    VAE never trains. Each group has a ``name`` for logs."""
    models.vae.requires_grad_(False)
    models.unet.requires_grad_(True)
    groups = [{"name": "unet", "params": list(models.unet.parameters()), "lr": unet_lr}]
    for name in models.text_encoder_names:
        encoder = getattr(models, name)
        encoder.requires_grad_(name in text_encoder_lrs)
        if name in text_encoder_lrs:
            groups.append({"name": name, "params": list(encoder.parameters()), "lr": text_encoder_lrs[name]})
    return groups
