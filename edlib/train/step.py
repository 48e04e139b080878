"""One optimizer step: per-sample losses of each batch of an accumulation group, their
backward passes, then the weight update, skipped when a loss was not finite."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from accelerate import Accelerator

from edlib.data.schedule import EpochSchedule
from edlib.model.config import TrainConfig
from edlib.model.flow_config import flow_settings
from edlib.model.methods import Method
from edlib.model.models import predict
from edlib.train.batches import BatchEncoder, batch_loss_scale, local_batch, sample_generators
from edlib.train.flow import flow_sample_losses
from edlib.train.hooks import Context, Plugin
from edlib.train.noise import min_snr_weights, per_sample_loss, sample_noise, sample_timesteps, training_target
from edlib.train.setup import Training
from edlib.train.unreadable import UnreadableImages


def optimizer_step(
    ctx: Context,
    training: Training,
    encoder: BatchEncoder,
    schedule: EpochSchedule,
    epoch: int,
    group: range,
    plugins: list[Plugin],
    unreadable: UnreadableImages,
) -> tuple[torch.Tensor, bool]:
    """Train the batches `group` of `schedule` as one optimizer step (gradients summed, each
    batch's loss divided by the group size). Returns the step's loss (a device tensor) and
    whether it was finite on every process; a non-finite step leaves the weights as they were."""
    config, accelerator, models = ctx.config, ctx.accelerator, training.models
    world, rank = accelerator.num_processes, accelerator.process_index
    finite, loss = True, torch.zeros((), device=accelerator.device)
    for k, b in enumerate(group):
        # an image gone or undecodable since the scan is replaced by another of its bucket
        batch = unreadable.fill(encoder, ctx.data, local_batch(schedule.batch(b), epoch, rank, world), schedule)
        syncing = k == len(group) - 1  # DDP all-reduces gradients on the group's last backward only
        with nullcontext() if syncing else accelerator.no_sync(models.unet):
            with accelerator.autocast():
                losses, raw_losses, timesteps = sample_losses(models, encoder, ctx.data, batch, config)
            scaled = (losses * batch_loss_scale(ctx.data, batch).to(losses.device)).mean() / len(group)
            finite = finite and all_finite(scaled, accelerator)
            if finite:
                accelerator.backward(scaled)
                loss += scaled.detach()
        for plugin in plugins:
            plugin.on_sample_losses(ctx, batch, timesteps, raw_losses.detach())

    if finite:
        average_gradients(training.method, models, accelerator)
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(training.trainable, config.max_grad_norm)
        training.optimizer.step()
        if training.ema is not None:
            training.ema.step(training.trainable)
    training.optimizer.zero_grad(set_to_none=True)
    training.lr_scheduler.step()
    return loss, finite


def sample_losses(models, encoder: BatchEncoder, data, batch, config: TrainConfig):
    """Per-sample losses (B,) of one batch: weighted (min-SNR) for training, raw for the
    loss tracker, and the timesteps drawn. Noise and timesteps come from the samples' own
    generators (see edlib.train.noise)."""
    latents, cond = encoder.encode(data, batch, config.seed)
    generators = sample_generators(config.seed, batch, "noise", latents.device)
    noise = sample_noise(
        latents,
        generators,
        noise_offset=config.noise_offset,
        multires_iterations=config.multires_noise_iterations,
        multires_discount=config.multires_noise_discount,
    )
    if models.flow_matching:  # SD3, FLUX: sigma, velocity (edlib.train.flow)
        return flow_sample_losses(models, latents, noise, cond, generators, flow_settings(config, models.family))
    scheduler = models.noise_scheduler
    timesteps = sample_timesteps(scheduler, generators, device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if config.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    prediction = predict(models.unet, noisy, timesteps, cond)
    raw = per_sample_loss(prediction, training_target(scheduler, latents, noise, timesteps))
    if not config.min_snr_gamma:
        return raw, raw, timesteps
    return raw * min_snr_weights(scheduler, timesteps, config.min_snr_gamma).to(raw.device), raw, timesteps


def average_gradients(method: Method, models, accelerator: Accelerator) -> None:
    """Average the gradients of trainable modules DDP does not wrap (see `setup.place_models`)."""
    if accelerator.num_processes == 1:
        return
    for name, module in method.trainable_modules(models).items():
        if name == "unet":
            continue
        for param in module.parameters():
            if param.grad is not None:
                param.grad = accelerator.reduce(param.grad, "mean")


def all_finite(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    """Whether the loss is finite on every process: all must skip a step together, or DDP's
    gradient all-reduce would wait forever for the one that skipped."""
    flag = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
    return bool(accelerator.gather(flag).min().item() > 0)
