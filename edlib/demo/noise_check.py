"""How much of an image's colour a noise schedule leaves in its last training timestep.

A text-to-image model only learns to take a colour from the prompt if it cannot read it
off its input. At the last training timestep the input is
``x_T = sqrt(a_T) * latents + sqrt(1 - a_T) * noise``; averaged over a latent of ``n``
positions, the noise shrinks by ``sqrt(n)`` while a flat colour does not, so a small
latent keeps its colour visible even when ``a_T`` looks negligible. SD1.5's schedule
(``a_T`` = 0.0047) on the world model's 16x16 latents leaves plain backgrounds about three
noise standard deviations apart: the model learns to read the background from the noise,
and at sampling, where ``x_T`` is pure noise, the seed picks it, whatever the prompt says.
A zero-terminal-SNR schedule (``a_T`` = 0) leaves nothing to read.
"""

from __future__ import annotations

import torch

from edlib.model.models import Models, encode_images
from edlib.world.render import PALETTE


def colour_separation_at_last_timestep(models: Models, alphas_cumprod: torch.Tensor, size: int) -> dict[str, float]:
    """Distance between the mean latents of plain images of two palette colours, in units of
    the noise left on that mean at the last timestep of a schedule (``alphas_cumprod``, e.g.
    ``scheduler.alphas_cumprod``): "min" and "median" over all colour pairs. Above ~1 a
    model can tell the colours apart from ``x_T`` alone."""
    flat = torch.stack(
        [torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, size, size) for rgb in PALETTE.values()]
    )
    latents = encode_images(models, flat / 127.5 - 1.0).float()
    means = latents.mean(dim=(2, 3))  # (colours, channels)
    positions = latents.shape[2] * latents.shape[3]
    a_last = float(alphas_cumprod[-1])
    noise_on_mean = (1.0 - a_last) ** 0.5 / positions**0.5
    distances = torch.pdist(means) * a_last**0.5 / noise_on_mean
    return {"min": round(distances.min().item(), 2), "median": round(distances.median().item(), 2)}
