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

# Elements updated per foreach call: bounds the fp32 temporary of (shadow - weight) to
# 256 MiB, where one call over all of SDXL's UNet would need 10 GiB.
EMA_CHUNK_ELEMENTS = 1 << 26


def make_ema(decay: float | None, parameters: list[torch.nn.Parameter]):
    """An `EMA` over `parameters`, or None when `decay` is unset."""
    if not decay:
        return None
    ema = _ema_class()(parameters, decay=decay, foreach=True)
    ema.to(dtype=torch.float32)  # with full_bf16 too: an average of tiny updates needs fp32
    return ema


def _ema_class():
    from diffusers.training_utils import EMAModel

    class EMA(EMAModel):
        """diffusers' EMAModel (same state, store/restore, checkpoints) whose `step` runs as a
        few foreach calls and can be skipped on the device: with `skip` (a bool tensor),
        the step count and the decay that depends on it live on the device, so a step with a
        non-finite loss leaves the average and the count as they were without the host
        reading the flag. `state_dict` reads the count back (at a save)."""

        _device_steps: torch.Tensor | None = None

        @torch.no_grad()
        def step(self, parameters, skip: torch.Tensor | None = None) -> None:
            parameters = list(parameters)
            if skip is None and self._device_steps is None:
                self.optimization_step += 1
                weight = 1.0 - self.get_decay(self.optimization_step)
            else:
                weight = self._device_weight(skip)
            pairs = [(s, p) for s, p in zip(self.shadow_params, parameters, strict=True) if p.requires_grad]
            for chunk in _chunks(pairs, EMA_CHUNK_ELEMENTS):
                shadow, params = [s for s, _ in chunk], [p for _, p in chunk]
                delta = torch._foreach_sub(shadow, params)
                if isinstance(weight, torch.Tensor):
                    torch._foreach_mul_(delta, weight)
                    torch._foreach_sub_(shadow, delta)
                else:
                    torch._foreach_sub_(shadow, delta, alpha=weight)

        def _device_weight(self, skip: torch.Tensor | None) -> torch.Tensor:
            """1 - decay at the new step count, 0 where `skip`; all on the device."""
            device = self.shadow_params[0].device
            if self._device_steps is None:
                self._device_steps = torch.full((), float(self.optimization_step), dtype=torch.float64, device=device)
            taken = torch.ones((), dtype=torch.float64, device=device) if skip is None else (~skip).to(torch.float64)
            self._device_steps += taken
            step = (self._device_steps - self.update_after_step - 1).clamp(min=0)
            if self.use_ema_warmup:
                decay = 1 - (1 + step / self.inv_gamma) ** -self.power
            else:
                decay = (1 + step) / (10 + step)
            decay = torch.where(step <= 0, 0.0, decay.clamp(max=self.decay, min=self.min_decay))
            return ((1 - decay) * taken).to(torch.float32)

        def state_dict(self) -> dict:
            if self._device_steps is not None:
                self.optimization_step = int(self._device_steps.item())
            return super().state_dict()

        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)
            self._device_steps = None

    return EMA


def _chunks(pairs: list, limit: int):
    chunk, size = [], 0
    for pair in pairs:
        if chunk and size + pair[0].numel() > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(pair)
        size += pair[0].numel()
    if chunk:
        yield chunk


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
