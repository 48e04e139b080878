"""Flow-matching losses for SD3/SD3.5 and FLUX.1 (pure torch; the model call is
`edlib.model.flow.predict_velocity`).

A sample at noise level sigma is ``(1 - sigma) * latents + sigma * noise``; the target is the
velocity ``noise - latents``. Sigma is drawn per sample from the sample's own generator (after
its noise, see `edlib.train.noise`), so like the noise it does not depend on the batch, the
process count or a resume. How it is drawn and shifted is `FlowSettings`
(`edlib.model.flow_config`, where each option's source is given).

The loss tracker and the validation loss count noise levels in timesteps, ``1000 * sigma``,
the scale FlowMatchEulerDiscreteScheduler uses.
"""

from __future__ import annotations

import math

import torch

from edlib.model.flow import predict_velocity
from edlib.model.flow_config import FlowSettings
from edlib.train.noise import Generators, _per_sample, per_sample_loss

NUM_TIMESTEPS = 1000


def flux_mu(packed_tokens: int) -> float:
    """FLUX.1's resolution-dependent shift exponent: 0.5 at 256 packed tokens (256 px), 1.15 at
    4096 (1024 px), on the line through them (its scheduler config: base_shift, max_shift,
    base_image_seq_len, max_image_seq_len)."""
    slope = (1.15 - 0.5) / (4096 - 256)
    return 0.5 + slope * (packed_tokens - 256)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The static shift ``s * sigma / (1 + (s - 1) * sigma)`` (SD3's scheduler shift)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(settings: FlowSettings, generator: Generators, latent_size: tuple[int, int], *, batch_size: int | None = None) -> torch.Tensor:
    """One sigma in [0, 1] per sample (float32, on the generators' device), drawn as
    ``settings`` says, for latents of ``latent_size`` (h, w: the FLUX shift depends on it)."""
    if batch_size is None:
        if isinstance(generator, torch.Generator):
            raise ValueError("sample_sigmas: batch_size is needed with a single generator")
        batch_size = len(generator)
    draws = []
    for g in _per_sample(generator, batch_size):
        if settings.timestep_sampling == "uniform":
            draws.append(torch.rand((1,), generator=g, device=g.device))
        else:
            normal = torch.randn((1,), generator=g, device=g.device)
            if settings.timestep_sampling == "logit_normal":
                draws.append(torch.sigmoid(settings.logit_mean + settings.logit_std * normal))
            else:  # sigmoid, flux_shift
                draws.append(torch.sigmoid(settings.sigmoid_scale * normal))
    sigmas = torch.cat(draws)
    if settings.timestep_sampling == "flux_shift":
        h, w = latent_size
        mu = math.exp(flux_mu((h // 2) * (w // 2)))
        # mu / (mu + 1/sigma - 1), written so sigma = 0 gives 0 rather than 0/inf.
        sigmas = mu * sigmas / (mu * sigmas + 1 - sigmas)
    if settings.timestep_shift != 1:
        sigmas = shift_sigmas(sigmas, settings.timestep_shift)
    return sigmas


def timesteps_of(sigmas: torch.Tensor) -> torch.Tensor:
    """Integer timesteps 0..999 of sigmas, for the loss tracker's timestep buckets."""
    return (sigmas * NUM_TIMESTEPS).long().clamp(0, NUM_TIMESTEPS - 1)


def flow_loss(models, latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, cond, settings: FlowSettings):
    """Per-sample losses (B,) at ``sigmas``: (weighted, raw). Raw is the velocity MSE; the
    ``x0`` target (SD3's preconditioning: the prediction turned into a clean-latent estimate
    ``x_t - sigma * v`` against the latents) is exactly that MSE times sigma^2, so it is
    computed as that weight."""
    s = sigmas.to(latents.device, latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
    noisy = (1 - s) * latents + s * noise
    prediction = predict_velocity(models, noisy, sigmas.to(latents.device), cond, settings.guidance)
    raw = per_sample_loss(prediction, noise - latents)
    if settings.flow_target == "x0":
        return raw * sigmas.to(raw.device, torch.float32) ** 2, raw
    return raw, raw


def flow_sample_losses(models, latents: torch.Tensor, noise: torch.Tensor, cond, generators, settings: FlowSettings):
    """What `edlib.train.step.sample_losses` returns for a flow family: weighted and raw
    per-sample losses and the timesteps (1000 * sigma) drawn."""
    sigmas = sample_sigmas(settings, generators, tuple(latents.shape[-2:])).to(latents.device)
    weighted, raw = flow_loss(models, latents, noise, sigmas, cond, settings)
    return weighted, raw, timesteps_of(sigmas)
