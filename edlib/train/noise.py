"""Noise, timesteps, targets and the per-sample loss of diffusion training (pure torch functions).

Every random draw takes either one ``torch.Generator`` or a list of them, one per sample.
With a list, a sample's noise and timestep depend only on its own generator, so they do not
change with the batch composition, the number of processes or a resume; the trainer seeds one
generator per sample for that reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Generators = torch.Generator | Sequence[torch.Generator]


def _per_sample(generator: Generators, batch_size: int) -> list[torch.Generator]:
    if isinstance(generator, torch.Generator):
        return [generator] * batch_size  # one stream, drawn sample after sample
    if len(generator) != batch_size:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch_size}")
    return list(generator)


def _pyramid_noise(noise: torch.Tensor, generator: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise for one sample ``[C, H, W]``.

    Level i adds white noise drawn at the size divided by r**i (r random in [2, 4), so the
    levels do not line up on a fixed grid), upsampled bilinearly and weighted by discount**i;
    the sum is rescaled to unit standard deviation. The low-frequency parts let the model
    change an image's overall colour and brightness, which plain white noise barely hides.
    """
    from diffusers.utils.torch_utils import randn_tensor

    channels, height, width = noise.shape
    total = noise.clone()
    for level in range(iterations):
        ratio = 2 + 2 * torch.rand((), generator=generator, device=generator.device).item()
        size = (max(1, int(height / ratio**level)), max(1, int(width / ratio**level)))
        coarse = randn_tensor((1, channels, *size), generator=generator, device=noise.device, dtype=noise.dtype)
        total += F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0] * discount**level
        if 1 in size:  # nothing coarser is left
            break
    return total / total.std()


def sample_noise(
    latents: torch.Tensor,
    generator: Generators,
    *,
    noise_offset: float = 0.0,
    multires_iterations: int = 0,
    multires_discount: float = 0.3,
) -> torch.Tensor:
    """Noise shaped like ``latents`` ``[B, C, H, W]``: Gaussian, optionally pyramid noise, then
    optionally offset noise.

    ``noise_offset`` adds ``noise_offset * N(0, 1)`` per sample and channel, constant over the
    image (the Crosslabs "noise offset"): it lets the model learn images much darker or
    brighter than average. Pyramid noise (``multires_iterations`` > 0, see `_pyramid_noise`)
    is normalised per sample, so a sample's noise does not depend on its batch; the offset is
    applied after it so its size is exactly ``noise_offset``.
    """
    from diffusers.utils.torch_utils import randn_tensor

    batch, channels = latents.shape[:2]
    samples = []
    for g in _per_sample(generator, batch):
        noise = randn_tensor(tuple(latents.shape[1:]), generator=g, device=latents.device, dtype=latents.dtype)
        if multires_iterations > 0:
            noise = _pyramid_noise(noise, g, multires_iterations, multires_discount)
        if noise_offset:
            offset = randn_tensor((channels, 1, 1), generator=g, device=latents.device, dtype=latents.dtype)
            noise = noise + noise_offset * offset
        samples.append(noise)
    return torch.stack(samples)


def sample_timesteps(
    scheduler, generator: Generators, *, batch_size: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Training timesteps, uniform over ``[0, num_train_timesteps)``, one per sample (long).

    With a list of generators the batch size is its length; with one generator give
    ``batch_size``."""
    if batch_size is None:
        if isinstance(generator, torch.Generator):
            raise ValueError("sample_timesteps: batch_size is needed with a single generator")
        batch_size = len(generator)
    steps = scheduler.config.num_train_timesteps
    draws = [torch.randint(0, steps, (1,), generator=g, device=g.device) for g in _per_sample(generator, batch_size)]
    return torch.cat([d.to(device) for d in draws]) if device is not None else torch.cat(draws)


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity
    ``v = sqrt(a) * noise - sqrt(1 - a) * latents`` (v_prediction), per the scheduler config."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type: {prediction_type!r} is not supported; allowed: epsilon, v_prediction")


def min_snr_weights(
    scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str | None = None
) -> torch.Tensor:
    """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023), ``[B]`` float32.

    With SNR(t) = a / (1 - a): epsilon prediction weighs ``min(SNR, gamma) / SNR``; v
    prediction ``min(SNR, gamma) / (SNR + 1)`` (the loss on v is the epsilon loss times
    SNR + 1), as diffusers' training scripts do. Low-noise timesteps, whose huge SNR would
    dominate the gradient, are capped at gamma. Where SNR is 0 (the last timestep of a zero
    terminal SNR schedule) the epsilon weight is its limit, 1, instead of 0 / 0.
    """
    from diffusers.training_utils import compute_snr

    if gamma <= 0:
        raise ValueError(f"min_snr_gamma: must be > 0, got {gamma}")
    prediction_type = prediction_type or scheduler.config.prediction_type
    snr = compute_snr(scheduler, timesteps)
    capped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return torch.where(snr > 0, capped / snr, torch.ones_like(snr))
    if prediction_type == "v_prediction":
        return capped / (snr + 1)
    raise ValueError(f"prediction_type: {prediction_type!r} is not supported; allowed: epsilon, v_prediction")


def per_sample_loss(
    model_pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error of each sample ``[B]``, in float32 whatever the model's dtype, times
    ``weights`` ``[B]`` if given. Per sample so that each image's ``loss_scale.txt`` (and the
    per-image loss tracking) can be applied before the batch mean."""
    losses = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    losses = losses.mean(dim=tuple(range(1, losses.ndim)))
    return losses if weights is None else losses * weights.to(losses.device, torch.float32)
