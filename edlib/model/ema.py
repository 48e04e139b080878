"""The exponential moving average of the trained weights (`ema_decay`), via diffusers' EMAModel.

EMA weights are what a run with EMA is for, so everything that shows or hands out a run's
result uses them: samples during the run, the exports at its end, and `load_trained`
(sampling and exporting afterwards). Training itself goes on with the raw weights.

The EMA covers every trainable parameter of the method (a training text encoder's too,
LoRA adapters only for LoRA), in the order `Method.trainable_parameters` gives, which is
how its checkpoint state is matched to parameters again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def make_ema(decay: float | None, parameters: list[torch.nn.Parameter]):
    """An EMAModel over `parameters`, or None when `decay` is unset."""
    if not decay:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(parameters, decay=decay)
    ema.to(dtype=torch.float32)  # with full_bf16 too: an average of tiny updates needs fp32
    return ema


@contextlib.contextmanager
def ema_weights(ema, parameters: list[torch.nn.Parameter]) -> Iterator[None]:
    """The EMA weights in place of `parameters` inside the block, the training weights back
    on exit, bit for bit (`EMAModel.store` keeps an exact copy, on the CPU). No EMA: a no-op."""
    if ema is None:
        yield
        return
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


def load_ema_weights(parameters: list[torch.nn.Parameter], state: dict[str, Any], where: str) -> None:
    """Copy a checkpoint's EMA state (`EMAModel.state_dict()`) into `parameters`."""
    shadow = state["shadow_params"]
    if len(shadow) != len(parameters) or any(s.shape != p.shape for s, p in zip(shadow, parameters)):
        raise ValueError(f"{where}: its EMA state does not match the method's trainable parameters")
    with torch.no_grad():
        for param, value in zip(parameters, shadow, strict=True):
            param.copy_(value.to(param.device, param.dtype))
