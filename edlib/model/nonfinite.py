"""Skipping a weight update whose loss was not finite, without the host waiting for the GPU.

Whether a step's loss was finite is known on the device; reading it on the host would drain
the GPU's queue every step. Optimizers that take a `found_inf` tensor (torch's fused
Adam/AdamW, edlib's stochastic-rounding AdamW: they declare `_step_supports_amp_scaling`, as
torch's GradScaler expects) skip on the device: the weights, the moments and the step count
stay as they were when the flag is set. Other optimizers (bitsandbytes' 8-bit AdamW, Lion,
Prodigy, Adafactor), and runs with fp16's grad scaler, read the flag on the host once per
step: the one host round trip such a step makes.
"""

from __future__ import annotations

import torch


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # inside accelerate's AcceleratedOptimizer


def skips_on_device(optimizer, grad_scaler=None) -> bool:
    """Whether `step_unless` can skip this optimizer's update without a host read."""
    return grad_scaler is None and bool(getattr(_inner(optimizer), "_step_supports_amp_scaling", False))


def step_unless(optimizer, skip: torch.Tensor) -> None:
    """`optimizer.step()`, made a no-op on the device where `skip` (a bool tensor) is True.
    Only for optimizers `skips_on_device` accepts."""
    inner = _inner(optimizer)
    inner.found_inf = skip.to(torch.float32).reshape(())  # what torch's fused kernels read
    inner.grad_scale = None
    try:
        optimizer.step()
    finally:
        del inner.found_inf, inner.grad_scale
